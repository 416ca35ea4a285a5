"""Provider presets through the webhook endpoint against a real Redis: each provider's own
library signs, the event is accepted and stored, and every refusal has its documented status."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from slack_sdk.signature import SignatureVerifier
from standardwebhooks import Webhook
from stripe import WebhookSignature
from twilio.request_validator import RequestValidator

from ingest.config import Settings, build_settings
from ingest.hashing import canonical_json, sha256_hex
from ingest.provenance.verify import records_at, verify_records
from ingest.sinks import FileSink
from ingest.webhooks.storage import store_event_batch
from tests.integration.test_webhooks_http import dumps, events_of, published
from webapp import create_app

pytestmark = pytest.mark.integration

STRIPE_SECRET, STRIPE_ROTATED = "whsec_stripe_current", "whsec_stripe_next"
GITHUB_SECRET = "It's a Secret to Everybody"
SHOPIFY_SECRET = "shpss_app_client_secret"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TWILIO_TOKEN = "twilio-auth-token"
STD_SECRET = "whsec_" + base64.b64encode(b"standard-webhooks-preset-secret!").decode()
PUBLIC_URL = "https://hooks.example.com"
UNAUTHORIZED = (401, {"error": "signature verification failed"})


def config(redis_url: str) -> Settings:
    sources = {
        "stripe": {
            "provider": "stripe",
            "signature": {"secrets": [STRIPE_SECRET, STRIPE_ROTATED]},
            "purpose": "billing",
        },
        "github": {
            "provider": "github",
            "signature": {"secrets": [GITHUB_SECRET]},
            "purpose": "repo-events",
        },
        "shopify": {
            "provider": "shopify",
            "signature": {"secrets": [SHOPIFY_SECRET]},
            "purpose": "orders",
        },
        "slack": {
            "provider": "slack",
            "signature": {"secrets": [SLACK_SECRET]},
            "purpose": "chat-ops",
        },
        "twilio": {
            "provider": "twilio",
            "signature": {"secrets": [TWILIO_TOKEN]},
            "publicUrl": PUBLIC_URL,
            "purpose": "sms",
        },
        "std": {
            "provider": "standard-webhooks",
            "signature": {"secrets": [STD_SECRET]},
            "purpose": "p",
        },
    }
    http = {"bufferSize": 50, "batchInterval": 2, "sources": sources}
    return build_settings({"redisUrl": redis_url, "http": http})


@pytest.fixture()
def app(redis_url: str, redis_client: redis.Redis) -> Iterator[Flask]:
    application = create_app(config(redis_url))
    yield application


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def stripe_event(event_id: str = "evt_1NbYo", amount: int = 2000) -> bytes:
    event = {
        "id": event_id,
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": 1_700_000_000,
        "data": {"object": {"id": "pi_1", "amount": amount}},
    }
    return dumps(event)


def stripe_headers(body: bytes, secret: str = STRIPE_SECRET, at: float | None = None) -> dict:
    stamp = int(time.time() if at is None else at)
    header = WebhookSignature.generate_signature_header(body.decode(), secret, timestamp=stamp)
    return {"Stripe-Signature": header, "Content-Type": "application/json; charset=utf-8"}


def github_headers(body: bytes, delivery: str, secret: str = GITHUB_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Hub-Signature-256": f"sha256={digest}",
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": "push",
        "Content-Type": "application/json",
    }


def slack_headers(body: bytes, at: float | None = None, secret: str = SLACK_SECRET) -> dict:
    stamp = str(int(time.time() if at is None else at))
    signature = SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body)
    assert signature is not None
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature}


def twilio_post(
    client: FlaskClient,
    fields: dict[str, str],
    token: str = TWILIO_TOKEN,
    signed_url: str = PUBLIC_URL + "/v1/webhooks/twilio?tenant=acme",
    **headers: str,
) -> Any:
    signature = RequestValidator(token).compute_signature(signed_url, fields)
    return client.post(
        "/v1/webhooks/twilio?tenant=acme",
        data=urlencode(fields),
        headers={
            "X-Twilio-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded",
            **headers,
        },
    )


def stored(redis_client: redis.Redis, sink_dir: Path) -> list[dict[str, Any]]:
    """Store what was published, as the worker would, and return the verified records."""
    sink = FileSink(f"file://{sink_dir}")
    for batch in published(redis_client):
        store_event_batch(batch, sink, None, "fallback")
    report = verify_records(records_at(str(sink_dir)))
    assert report.ok, report.details
    return [r.record for r in records_at(str(sink_dir))]


class TestStripe:
    def test_signed_event_is_accepted_keyed_by_its_id_and_stored(
        self, client: FlaskClient, redis_client: redis.Redis, tmp_path: Path
    ) -> None:
        body = stripe_event()
        answer = client.post("/v1/webhooks/stripe", data=body, headers=stripe_headers(body))
        digest = sha256_hex(canonical_json(json.loads(body)))
        assert (answer.status_code, answer.json) == (
            202,
            {"status": "accepted", "eventId": "evt_1NbYo", "contentHash": digest},
        )
        [entry] = events_of(redis_client)
        assert entry["observedAt"] == "2023-11-14T22:13:20.000Z"  # the event's "created"
        [record] = stored(redis_client, tmp_path)
        assert record["data"] == json.loads(body)
        assert record["provenance"]["contentHash"] == digest

    def test_replay_is_200_duplicate_and_a_stale_replay_401(self, client: FlaskClient) -> None:
        body = stripe_event()
        headers = stripe_headers(body)
        first = client.post("/v1/webhooks/stripe", data=body, headers=headers)
        # Stripe retries with a new timestamp and signature: the event id makes it a duplicate.
        again = client.post("/v1/webhooks/stripe", data=body, headers=stripe_headers(body))
        assert first.status_code == 202
        assert (again.status_code, again.json) == (200, {**first.json, "status": "duplicate"})
        stale = stripe_headers(body, at=time.time() - 301)
        answer = client.post("/v1/webhooks/stripe", data=body, headers=stale)
        assert (answer.status_code, answer.json) == UNAUTHORIZED

    def test_same_event_id_with_another_body_is_422(self, client: FlaskClient) -> None:
        for amount, expected in ((1, 202), (2, 422)):
            body = stripe_event("evt_same", amount)
            answer = client.post("/v1/webhooks/stripe", data=body, headers=stripe_headers(body))
            assert answer.status_code == expected

    def test_rotated_secret_is_accepted(self, client: FlaskClient) -> None:
        body = stripe_event("evt_rotated")
        headers = stripe_headers(body, STRIPE_ROTATED)
        assert client.post("/v1/webhooks/stripe", data=body, headers=headers).status_code == 202

    @pytest.mark.parametrize("fault", ["wrong secret", "stale", "future", "tampered", "missing"])
    def test_refusals_are_401(
        self, client: FlaskClient, redis_client: redis.Redis, fault: str
    ) -> None:
        body = stripe_event()
        headers = {
            "wrong secret": lambda: stripe_headers(body, "whsec_not_ours"),
            "stale": lambda: stripe_headers(body, at=time.time() - 301),
            "future": lambda: stripe_headers(body, at=time.time() + 301),
            "tampered": lambda: stripe_headers(stripe_event(amount=1)),
            "missing": lambda: {"Content-Type": "application/json"},
        }[fault]()
        answer = client.post("/v1/webhooks/stripe", data=body, headers=headers)
        assert (answer.status_code, answer.json) == UNAUTHORIZED
        assert published(redis_client) == []

    def test_form_body_is_415(self, client: FlaskClient) -> None:
        body = b"id=evt_1"
        headers = dict(
            stripe_headers(body), **{"Content-Type": "application/x-www-form-urlencoded"}
        )
        answer = client.post("/v1/webhooks/stripe", data=body, headers=headers)
        assert answer.status_code == 415 and "application/json" in answer.json["error"]


class TestGitHub:
    def test_documented_vector_verifies_then_the_body_is_not_json(
        self, client: FlaskClient
    ) -> None:
        # GitHub's own example: the signature holds, so what is refused is the body (400).
        headers = {
            "X-Hub-Signature-256": "sha256="
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "Content-Type": "application/json",
        }
        answer = client.post("/v1/webhooks/github", data=b"Hello, World!", headers=headers)
        assert answer.status_code == 400 and "not valid JSON" in answer.json["error"]
        answer = client.post("/v1/webhooks/github", data=b"Hello, World?", headers=headers)
        assert (answer.status_code, answer.json) == UNAUTHORIZED

    def test_keyed_by_the_delivery_id_and_replay_is_duplicate(
        self, client: FlaskClient, redis_client: redis.Redis
    ) -> None:
        body = dumps({"ref": "refs/heads/main", "after": "abc123"})
        delivery = str(uuid.uuid4())
        headers = github_headers(body, delivery)
        first = client.post("/v1/webhooks/github", data=body, headers=headers)
        again = client.post("/v1/webhooks/github", data=body, headers=headers)
        assert (first.status_code, first.json["eventId"]) == (202, delivery)
        assert (again.status_code, again.json["status"]) == (200, "duplicate")
        assert [e["eventId"] for e in events_of(redis_client)] == [delivery]

    def test_wrong_secret_is_401(self, client: FlaskClient) -> None:
        body = dumps({"ref": "x"})
        headers = github_headers(body, "d-1", secret="not it")
        answer = client.post("/v1/webhooks/github", data=body, headers=headers)
        assert (answer.status_code, answer.json) == UNAUTHORIZED


class TestShopify:
    def test_base64_signature_keyed_by_webhook_id_with_triggered_at(
        self, client: FlaskClient, redis_client: redis.Redis
    ) -> None:
        body = dumps({"id": 820982911946154508, "email": "jon@example.com"})
        digest = hmac.new(SHOPIFY_SECRET.encode(), body, hashlib.sha256).digest()
        headers = {
            "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
            "X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
            "X-Shopify-Triggered-At": "2026-12-06T08:00:00.123456Z",
            "X-Shopify-Topic": "orders/create",
            "Content-Type": "application/json",
        }
        answer = client.post("/v1/webhooks/shopify", data=body, headers=headers)
        assert (answer.status_code, answer.json["eventId"]) == (
            202,
            headers["X-Shopify-Webhook-Id"],
        )
        [entry] = events_of(redis_client)
        assert entry["observedAt"] == "2026-12-06T08:00:00.123456Z"
        tampered = client.post("/v1/webhooks/shopify", data=body + b" ", headers=headers)
        assert (tampered.status_code, tampered.json) == UNAUTHORIZED


class TestSlack:
    def test_url_verification_is_answered_only_when_signed(
        self, client: FlaskClient, redis_client: redis.Redis
    ) -> None:
        body = dumps(
            {
                "token": "Jhj5dZrVaK7Z",
                "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                "type": "url_verification",
            }
        )
        headers = {**slack_headers(body), "Content-Type": "application/json"}
        answer = client.post("/v1/webhooks/slack", data=body, headers=headers)
        assert (answer.status_code, answer.json) == (
            200,
            {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"},
        )
        forged = {**slack_headers(body, secret="guess"), "Content-Type": "application/json"}
        answer = client.post("/v1/webhooks/slack", data=body, headers=forged)
        assert (answer.status_code, answer.json) == UNAUTHORIZED
        assert published(redis_client) == []  # the handshake is answered, not stored

    def test_event_keyed_by_event_id_and_retry_is_duplicate(
        self, client: FlaskClient, redis_client: redis.Redis
    ) -> None:
        event = {
            "type": "event_callback",
            "event_id": "Ev0PV52K21",
            "event_time": 1_700_000_000,
            "event": {"type": "app_mention", "text": "hi"},
        }
        body = dumps(event)
        first = client.post(
            "/v1/webhooks/slack",
            data=body,
            headers={**slack_headers(body), "Content-Type": "application/json"},
        )
        retry_headers = {**slack_headers(body), "X-Slack-Retry-Num": "1"}
        again = client.post(
            "/v1/webhooks/slack",
            data=body,
            headers={**retry_headers, "Content-Type": "application/json"},
        )
        assert (first.status_code, first.json["eventId"]) == (202, "Ev0PV52K21")
        assert (again.status_code, again.json["status"]) == (200, "duplicate")
        [entry] = events_of(redis_client)
        assert entry["observedAt"] == "2023-11-14T22:13:20.000Z"

    def test_slash_command_form_is_stored_as_an_object(
        self, client: FlaskClient, redis_client: redis.Redis
    ) -> None:
        fields = {"command": "/weather", "text": "94070", "user_id": "U2147483697"}
        body = urlencode(fields).encode()
        headers = {**slack_headers(body), "Content-Type": "application/x-www-form-urlencoded"}
        answer = client.post("/v1/webhooks/slack", data=body, headers=headers)
        assert answer.status_code == 202
        assert answer.json["contentHash"] == sha256_hex(canonical_json(fields))
        [entry] = events_of(redis_client)
        assert json.loads(entry["eventJson"]) == fields

    def test_stale_timestamp_is_401(self, client: FlaskClient) -> None:
        body = dumps({"type": "event_callback", "event_id": "Ev1"})
        headers = {**slack_headers(body, at=time.time() - 301), "Content-Type": "application/json"}
        answer = client.post("/v1/webhooks/slack", data=body, headers=headers)
        assert (answer.status_code, answer.json) == UNAUTHORIZED


class TestTwilio:
    FIELDS = {"MessageSid": "SM1", "From": "+14158675310", "Body": "Hello & goodbye"}

    def test_form_body_is_stored_as_the_json_object_of_its_fields(
        self, client: FlaskClient, redis_client: redis.Redis, tmp_path: Path
    ) -> None:
        answer = twilio_post(client, self.FIELDS, **{"I-Twilio-Idempotency-Token": "tok-1"})
        digest = sha256_hex(canonical_json(self.FIELDS))
        assert (answer.status_code, answer.json) == (
            202,
            {"status": "accepted", "eventId": "tok-1", "contentHash": digest},
        )
        [record] = stored(redis_client, tmp_path)
        assert record["data"] == self.FIELDS
        assert record["provenance"]["contentHash"] == digest

    def test_retry_with_the_same_token_is_duplicate(self, client: FlaskClient) -> None:
        token = {"I-Twilio-Idempotency-Token": "tok-2"}
        assert twilio_post(client, self.FIELDS, **token).status_code == 202
        again = twilio_post(client, self.FIELDS, **token)
        assert (again.status_code, again.json["status"]) == (200, "duplicate")

    @pytest.mark.parametrize(
        "fault",
        ["wrong token", "another host", "another query", "forwarded host", "missing"],
    )
    def test_refusals_are_401(self, client: FlaskClient, fault: str) -> None:
        signed_url = {
            "another host": "https://evil.example.com/v1/webhooks/twilio?tenant=acme",
            "another query": PUBLIC_URL + "/v1/webhooks/twilio?tenant=other",
            # Signed for the host a proxy claims: X-Forwarded-* is never trusted implicitly.
            "forwarded host": "https://proxy.example.org/v1/webhooks/twilio?tenant=acme",
        }.get(fault, PUBLIC_URL + "/v1/webhooks/twilio?tenant=acme")
        token = "wrong" if fault == "wrong token" else TWILIO_TOKEN
        extra = {"X-Forwarded-Host": "proxy.example.org", "X-Forwarded-Proto": "https"}
        answer = twilio_post(client, self.FIELDS, token, signed_url, **extra)
        if fault == "missing":
            answer = client.post(
                "/v1/webhooks/twilio?tenant=acme",
                data=urlencode(self.FIELDS),
                content_type="application/x-www-form-urlencoded",
            )
        assert (answer.status_code, answer.json) == UNAUTHORIZED


def test_standard_webhooks_preset_keys_by_webhook_id(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    body = dumps({"type": "user.created"})
    now = datetime.now(UTC)
    headers = {
        "webhook-id": "msg_p1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(STD_SECRET).sign("msg_p1", now, body.decode()),
        "Content-Type": "application/json",
    }
    answer = client.post("/v1/webhooks/std", data=body, headers=headers)
    assert (answer.status_code, answer.json["eventId"]) == (202, "msg_p1")
    [entry] = events_of(redis_client)
    assert entry["observedAt"] == now.replace(microsecond=0).isoformat(
        timespec="milliseconds"
    ).replace("+00:00", "Z")
