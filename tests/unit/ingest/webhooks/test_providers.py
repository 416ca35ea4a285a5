"""Provider presets: what a preset sets, what explicit settings override, and the per-request
helpers (media types and form bodies, idempotency key, observedAt, Slack's handshake)."""

from __future__ import annotations

from typing import Any

import pytest

from ingest.config import ConfigError, build_settings
from ingest.hashing import canonical_json, sha256_hex
from ingest.webhooks.bodies import MalformedBody, UnsupportedMediaType, parse_form
from ingest.webhooks.intake import WebhookSource, webhook_sources
from ingest.webhooks.providers import (
    decode_event,
    event_observed_at,
    media_kind,
    provider_key,
    request_target,
    slack_challenge,
)

FORM_TYPE = "application/x-www-form-urlencoded"


def source(**cfg: Any) -> WebhookSource:
    cfg.setdefault("signature", {"secrets": ["s3cret"]})
    cfg.setdefault("purpose", "p")
    settings = build_settings({"http": {"sources": {"s": cfg}}})
    return WebhookSource.from_config("s", settings.http.sources["s"], settings.http)


class TestPresets:
    def test_each_preset(self) -> None:
        stripe = source(provider="stripe")
        assert (stripe.signature.scheme, stripe.id_field, stripe.observed_at_field) == (
            "stripe",
            "id",
            "created",
        )
        shopify = source(provider="shopify")
        assert shopify.signature.header == "X-Shopify-Hmac-Sha256"
        assert (shopify.signature.prefix, shopify.signature.encoding) == ("", "base64")
        assert shopify.id_header == "X-Shopify-Webhook-Id"
        assert source(provider="github").id_header == "X-GitHub-Delivery"
        slack = source(provider="slack")
        assert (slack.id_field, slack.form_bodies) == ("event_id", True)
        twilio = source(provider="twilio", publicUrl="https://h.example.com/")
        assert twilio.public_url == "https://h.example.com" and twilio.form_bodies
        assert twilio.id_header == "I-Twilio-Idempotency-Token"
        std = source(provider="standard-webhooks", signature={"secrets": ["whsec_c2VjcmV0"]})
        assert std.signature.scheme == "standard-webhooks" and std.id_header == "webhook-id"

    def test_explicit_settings_override_the_preset(self) -> None:
        src = source(
            provider="github",
            signature={"secrets": ["s"], "header": "X-Signature", "prefix": ""},
            idHeader="X-Request-Id",
        )
        assert (src.signature.header, src.signature.prefix) == ("X-Signature", "")
        assert src.signature.scheme == "hmac-sha256" and src.id_header == "X-Request-Id"
        stripe = source(provider="stripe", idField="data.object.id", observedAtField="x.at")
        assert stripe.id_field == "data.object.id" and stripe.observed_at_field == "x.at"
        off = source(provider="stripe", signature={"scheme": "none"})
        assert off.signature.scheme == "none" and off.id_field == "id"

    def test_the_config_as_shown_means_the_same_when_loaded_again(self) -> None:
        cfg = {"provider": "shopify", "signature": {"secrets": ["s"]}, "purpose": "p"}
        settings = build_settings({"http": {"sources": {"s": cfg}}})
        shown = settings.model_dump(by_alias=True, mode="json")  # as `ingest config show`
        again = build_settings(shown)
        first = WebhookSource.from_config("s", settings.http.sources["s"], settings.http)
        second = WebhookSource.from_config("s", again.http.sources["s"], again.http)
        assert first == second and second.signature.encoding == "base64"

    def test_sources_without_a_provider_are_as_before(self) -> None:
        src = source(signature={"scheme": "hmac-sha256", "secrets": ["s"]})
        assert (src.signature.header, src.signature.prefix) == ("X-Hub-Signature-256", "sha256=")
        assert src.provider is None and src.id_header is None and not src.form_bodies

    @pytest.mark.parametrize(
        "cfg,message",
        [
            ({"signature": {"secrets": ["s"]}}, "signature.scheme is required"),
            ({"provider": "twilio"}, "publicUrl is required"),
            ({"provider": "twilio", "publicUrl": "hooks.example.com"}, "publicUrl must be"),
            ({"provider": "twilio", "publicUrl": "https://h/?a=1"}, "publicUrl must be"),
            ({"provider": "paypal"}, "provider"),
            ({"provider": "stripe", "signature": {"encoding": "b32"}}, "encoding"),
        ],
    )
    def test_config_refused_naming_the_key(self, cfg: dict[str, Any], message: str) -> None:
        with pytest.raises(ConfigError, match=r"http\.sources\.s") as caught:
            sig = {"signature": {"secrets": ["s"]}}
            build_settings({"http": {"sources": {"s": {"purpose": "p", **sig, **cfg}}}})
        assert message in str(caught.value)

    def test_provider_without_secrets_stops_start_up(self) -> None:
        settings = build_settings(
            {"http": {"sources": {"s": {"provider": "stripe", "signature": {}, "purpose": "p"}}}}
        )
        with pytest.raises(ValueError, match=r"http\.sources\.s\.signature: .*secret"):
            webhook_sources(settings.http)


class TestBodies:
    def test_form_is_stored_as_the_json_object_of_its_fields(self) -> None:
        twilio = source(provider="twilio", publicUrl="https://h")
        parsed = decode_event(twilio, FORM_TYPE + "; charset=UTF-8", b"A=1&B=x+y%21&C=", 8)
        assert parsed.event == {"A": "1", "B": "x y!", "C": ""}
        assert parsed.content_hash == sha256_hex(canonical_json(parsed.event))

    def test_repeated_fields_become_a_list(self) -> None:
        assert parse_form(b"To=1&Body=hi&To=2") == {"To": ["1", "2"], "Body": "hi"}

    def test_json_still_works_for_form_sources(self) -> None:
        slack = source(provider="slack")
        assert decode_event(slack, "application/json", b'{"a": 1}', 8).event == {"a": 1}

    def test_form_is_415_where_the_preset_does_not_expect_it(self) -> None:
        with pytest.raises(UnsupportedMediaType) as caught:
            decode_event(source(provider="stripe"), FORM_TYPE, b"a=1", 8)
        assert caught.value.status == 415 and "application/json" in caught.value.message
        with pytest.raises(UnsupportedMediaType):
            media_kind(source(provider="slack"), FORM_TYPE, allow_ndjson=True)  # not on batches

    @pytest.mark.parametrize("body", [b"a=%ff", b"\xc3\xa9=1", b"a=1&" * 1001])
    def test_malformed_form_is_400(self, body: bytes) -> None:
        with pytest.raises(MalformedBody) as caught:
            decode_event(source(provider="slack"), FORM_TYPE, body, 8)
        assert caught.value.status == 400


class TestKeysAndTimes:
    def test_provider_key_header_or_event_field(self) -> None:
        gh = source(provider="github")
        assert provider_key(gh, {"x-github-delivery": " d-1 "}, {}) == "d-1"
        assert provider_key(gh, {}, {}) is None
        stripe = source(provider="stripe")
        assert provider_key(stripe, {"idempotency-key": "k"}, {"id": "evt_1"}) == "evt_1"
        assert provider_key(stripe, {}, {"type": "x"}) is None

    def test_sources_without_a_provider_keep_the_contract_order(self) -> None:
        plain = source(signature={"scheme": "none"}, idField="id")
        assert provider_key(plain, {"idempotency-key": "k"}, {"id": "e"}) is None

    def test_observed_at_from_the_event_or_a_header(self) -> None:
        stripe = source(provider="stripe")
        assert event_observed_at(stripe, {}, {"created": 1_700_000_000}) == (
            "2023-11-14T22:13:20.000Z"
        )
        shopify = source(provider="shopify")
        at = "2026-12-06T08:00:00.123Z"
        assert event_observed_at(shopify, {"x-shopify-triggered-at": at}, {}) == at
        assert event_observed_at(shopify, {"x-shopify-triggered-at": "yesterday"}, {}) is None
        plain = source(signature={"scheme": "none"})
        assert event_observed_at(plain, {"webhook-timestamp": "1700000000"}, {}) == (
            "2023-11-14T22:13:20.000Z"
        )
        assert event_observed_at(source(provider="github"), {}, {"created": 1}) is None

    def test_slack_challenge_only_for_slack_sources(self) -> None:
        event = {"type": "url_verification", "challenge": "3eZbrw1a", "token": "t"}
        assert slack_challenge(source(provider="slack"), event) == {"challenge": "3eZbrw1a"}
        assert slack_challenge(source(provider="slack"), {"type": "event_callback"}) is None
        assert slack_challenge(source(provider="github"), event) is None


class TestRequestTarget:
    def test_raw_uri_as_received(self) -> None:
        environ = {"RAW_URI": "/v1/webhooks/tw?a=%20b&c", "PATH_INFO": "/v1/webhooks/tw"}
        assert request_target(environ) == "/v1/webhooks/tw?a=%20b&c"

    def test_query_missing_from_raw_uri_is_added(self) -> None:
        environ = {"RAW_URI": "/v1/webhooks/tw", "QUERY_STRING": "a=1"}
        assert request_target(environ) == "/v1/webhooks/tw?a=1"

    def test_absolute_form_keeps_path_and_query(self) -> None:
        environ = {"RAW_URI": "http://evil.example/v1/webhooks/tw?x=1"}
        assert request_target(environ) == "/v1/webhooks/tw?x=1"

    def test_without_raw_uri_the_path_is_quoted_back(self) -> None:
        path = "/v1/webhooks/tw/é".encode().decode("latin-1")  # as WSGI hands it over
        environ = {"SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "a=1"}
        assert request_target(environ) == "/v1/webhooks/tw/%C3%A9?a=1"


def test_the_copy_paste_configs_of_the_guide_are_valid() -> None:
    import json
    import re
    from pathlib import Path

    guide = (Path(__file__).resolve().parents[4] / "docs" / "webhooks.md").read_text()
    section = guide.split("## Provider presets", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```json\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    sources: dict[str, Any] = {}
    for block in blocks:
        sources.update(json.loads(block))
    assert set(sources) == {"stripe", "github", "shopify", "slack", "twilio", "acme"}
    settings = build_settings({"http": {"sources": sources}})
    prepared = webhook_sources(settings.http)
    assert {name: src.provider for name, src in prepared.items()} == {
        name: cfg["provider"] for name, cfg in sources.items()
    }
