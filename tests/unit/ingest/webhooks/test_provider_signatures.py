"""Provider signature schemes, checked against requests signed by each provider's own library
(stripe, slack_sdk, twilio, standardwebhooks) or its documented test vector (GitHub)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from slack_sdk.signature import SignatureVerifier
from standardwebhooks.webhooks import Webhook as StandardWebhook
from stripe import WebhookSignature
from twilio.request_validator import RequestValidator

from ingest.config import build_settings
from ingest.webhooks.intake import WebhookSource
from ingest.webhooks.providers import verify_request
from ingest.webhooks.signatures import SignatureError, VerifiedSignature

NOW = 1_700_000_000
EVENT = {"id": "evt_1", "type": "invoice.paid", "created": NOW - 5, "data": {"name": "Zoë"}}
BODY = json.dumps(EVENT).encode()
STRIPE_SECRET, STRIPE_NEW = "whsec_test_old_secret", "whsec_test_new_secret"
SLACK_SECRET, SLACK_NEW = "8f742231b10e8888abcd99yyyzzz85a5", "a-rotated-slack-signing-secret"
TWILIO_TOKEN, TWILIO_NEW = "12345", "rotated-auth-token"
SHOPIFY_SECRET = "shpss_client_secret"
STD_SECRET = "whsec_" + base64.b64encode(b"provider-test-secret-of-32-bytes").decode()
PUBLIC = "https://hooks.example.com"
PATH = "/v1/webhooks/tw?tenant=a%20b"
FORM = {"CallSid": "CA123", "Caller": "+14158675310", "Digits": "1234", "To": "+18005551212"}


def source(provider: str, *secrets: str, **extra: object) -> WebhookSource:
    cfg = {"provider": provider, "signature": {"secrets": list(secrets)}, "purpose": "p", **extra}
    settings = build_settings({"http": {"sources": {"s": cfg}}})
    return WebhookSource.from_config("s", settings.http.sources["s"], settings.http)


def lowered(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def check(
    src: WebhookSource,
    headers: dict[str, str],
    body: bytes = BODY,
    path: str = PATH,
    now: float = NOW,
) -> VerifiedSignature:
    return verify_request(src, lowered(headers), body, path, now=now)


def refused(src: WebhookSource, headers: dict[str, str], body: bytes = BODY, **kw: object) -> str:
    with pytest.raises(SignatureError) as caught:
        check(src, headers, body, **kw)  # type: ignore[arg-type]
    return str(caught.value)


def stripe_headers(secret: str = STRIPE_SECRET, at: int = NOW, body: bytes = BODY) -> dict:
    header = WebhookSignature.generate_signature_header(body.decode(), secret, timestamp=at)
    return {"Stripe-Signature": header}


class TestStripe:
    src = source("stripe", STRIPE_SECRET, STRIPE_NEW)

    def test_library_signature_is_accepted(self) -> None:
        assert check(self.src, stripe_headers()).timestamp == NOW

    def test_signature_verifies_with_the_library_too(self) -> None:
        header = stripe_headers()["Stripe-Signature"]
        assert WebhookSignature.verify_header(BODY, header, STRIPE_SECRET, tolerance=None)

    def test_rotated_secret_and_several_v1(self) -> None:
        assert check(self.src, stripe_headers(STRIPE_NEW))
        old = stripe_headers("whsec_retired")["Stripe-Signature"]
        new = stripe_headers(STRIPE_NEW)["Stripe-Signature"].split(",")[1]
        assert check(self.src, {"Stripe-Signature": f"{old},{new},v0=abc"})

    @pytest.mark.parametrize("offset", [-301, 301])
    def test_stale_or_future_timestamp(self, offset: int) -> None:
        assert refused(self.src, stripe_headers(at=NOW + offset)) == "signature verification failed"

    def test_tolerance_can_be_set_explicitly(self) -> None:
        wide = source("stripe", STRIPE_SECRET, signature={"secrets": [STRIPE_SECRET]})
        assert wide.signature.tolerance_seconds == 300
        wide = source("stripe", signature={"secrets": [STRIPE_SECRET], "toleranceSeconds": 900})
        assert check(wide, stripe_headers(at=NOW - 600))

    @pytest.mark.parametrize(
        "header",
        [
            "",
            "v1=" + "0" * 64,  # no timestamp
            f"t={NOW}",  # no v1
            f"t={NOW},t={NOW},v1=" + "0" * 64,  # which t was signed?
            "t=1.7e9,v1=" + "0" * 64,
            f"t={NOW},v1=not-hex",
        ],
    )
    def test_malformed_header(self, header: str) -> None:
        refused(self.src, {"Stripe-Signature": header})

    def test_wrong_secret_tampered_body_missing_header(self) -> None:
        refused(self.src, stripe_headers("whsec_wrong"))
        refused(self.src, stripe_headers(), BODY.replace(b"paid", b"void"))
        refused(self.src, {})


class TestGitHub:
    src = source("github", "It's a Secret to Everybody")
    # https://docs.github.com/webhooks/using-webhooks/validating-webhook-deliveries#testing-the-webhook-payload-validation
    VECTOR = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

    def test_documented_vector(self) -> None:
        assert check(self.src, {"X-Hub-Signature-256": self.VECTOR}, b"Hello, World!")

    def test_preset_is_hmac_sha256_in_the_github_header(self) -> None:
        sig = self.src.signature
        assert (sig.scheme, sig.header, sig.prefix, sig.encoding) == (
            "hmac-sha256",
            "X-Hub-Signature-256",
            "sha256=",
            "hex",
        )

    def test_failures(self) -> None:
        refused(self.src, {"X-Hub-Signature-256": self.VECTOR}, b"Hello, World?")
        refused(self.src, {}, b"Hello, World!")
        wrong = source("github", "another secret")
        refused(wrong, {"X-Hub-Signature-256": self.VECTOR}, b"Hello, World!")

    def test_rotation(self) -> None:
        both = source("github", "new secret", "It's a Secret to Everybody")
        assert check(both, {"X-Hub-Signature-256": self.VECTOR}, b"Hello, World!")


def shopify_header(secret: str, body: bytes = BODY) -> dict[str, str]:
    # As Shopify's guide computes it: Base64.strict_encode64(HMAC-SHA256(secret, raw body)).
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {"X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode()}


class TestShopify:
    src = source("shopify", SHOPIFY_SECRET, "shpss_rotated")

    def test_base64_signature_and_rotation(self) -> None:
        assert check(self.src, shopify_header(SHOPIFY_SECRET))
        assert check(self.src, shopify_header("shpss_rotated"))

    def test_hex_or_wrong_case_is_refused(self) -> None:
        good = shopify_header(SHOPIFY_SECRET)["X-Shopify-Hmac-Sha256"]
        refused(self.src, {"X-Shopify-Hmac-Sha256": good.swapcase()})
        hexed = hmac.new(SHOPIFY_SECRET.encode(), BODY, hashlib.sha256).hexdigest()
        refused(self.src, {"X-Shopify-Hmac-Sha256": hexed})

    def test_failures(self) -> None:
        refused(self.src, shopify_header("shpss_wrong"))
        refused(self.src, shopify_header(SHOPIFY_SECRET), BODY + b" ")
        refused(self.src, {})


def slack_headers(secret: str = SLACK_SECRET, at: int = NOW, body: bytes = BODY) -> dict:
    signature = SignatureVerifier(secret).generate_signature(timestamp=str(at), body=body)
    assert signature is not None
    return {"X-Slack-Request-Timestamp": str(at), "X-Slack-Signature": signature}


class TestSlack:
    src = source("slack", SLACK_SECRET, SLACK_NEW)

    def test_library_signature_and_rotation(self) -> None:
        assert check(self.src, slack_headers()).timestamp == NOW
        assert check(self.src, slack_headers(SLACK_NEW))

    def test_form_body_is_signed_as_sent(self) -> None:
        body = urlencode({"command": "/weather", "text": "94070"}).encode()
        assert check(self.src, slack_headers(body=body), body)

    @pytest.mark.parametrize("offset", [-301, 301])
    def test_stale_timestamp(self, offset: int) -> None:
        refused(self.src, slack_headers(at=NOW + offset))

    def test_failures(self) -> None:
        refused(self.src, slack_headers("wrong"))
        refused(self.src, slack_headers(), BODY + b"\n")
        headers = slack_headers()
        refused(self.src, {"X-Slack-Signature": headers["X-Slack-Signature"]})
        refused(self.src, {"X-Slack-Request-Timestamp": str(NOW)})
        refused(self.src, dict(headers, **{"X-Slack-Signature": "v1=" + "0" * 64}))
        # The timestamp is part of the signed string: another one breaks the signature.
        refused(self.src, dict(headers, **{"X-Slack-Request-Timestamp": str(NOW + 1)}))


def twilio_headers(
    token: str = TWILIO_TOKEN, url: str = PUBLIC + PATH, params: object = FORM
) -> dict[str, str]:
    signature = RequestValidator(token).compute_signature(url, params)
    return {
        "X-Twilio-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
    }


class TestTwilio:
    src = source("twilio", TWILIO_TOKEN, TWILIO_NEW, publicUrl=PUBLIC + "/")
    body = urlencode(FORM).encode()

    def test_library_signature_over_public_url_path_query_and_form(self) -> None:
        assert check(self.src, twilio_headers(), self.body)
        assert check(self.src, twilio_headers(TWILIO_NEW), self.body)

    def test_validator_agrees(self) -> None:
        validator = RequestValidator(TWILIO_TOKEN)
        assert validator.validate(PUBLIC + PATH, FORM, twilio_headers()["X-Twilio-Signature"])

    def test_url_signed_with_the_default_port_is_accepted(self) -> None:
        headers = twilio_headers(url="https://hooks.example.com:443" + PATH)
        assert check(self.src, headers, self.body)

    def test_another_url_path_or_query_is_refused(self) -> None:
        refused(self.src, twilio_headers(url="https://evil.example.com" + PATH), self.body)
        refused(self.src, twilio_headers(), self.body, path="/v1/webhooks/tw?tenant=other")
        refused(self.src, twilio_headers(), self.body, path="/v1/webhooks/tw")

    def test_changed_or_added_field_is_refused(self) -> None:
        refused(self.src, twilio_headers(), self.body.replace(b"1234", b"9999"))
        refused(self.src, twilio_headers(), self.body + b"&Extra=1")

    def test_repeated_fields_as_the_library_signs_them(self) -> None:
        class Multi(dict[str, list[str]]):
            def getlist(self, name: str) -> list[str]:
                return self[name]

        params = Multi({"To": ["+2", "+1"], "Body": ["hi"]})
        body = b"To=%2B2&Body=hi&To=%2B1"
        assert check(self.src, twilio_headers(params=params), body)

    def test_json_body_is_covered_by_body_sha256(self) -> None:
        digest = hashlib.sha256(BODY).hexdigest()
        path = f"/v1/webhooks/tw?bodySHA256={digest}"
        headers = twilio_headers(url=PUBLIC + path, params={})
        headers["Content-Type"] = "application/json"
        assert check(self.src, headers, BODY, path=path)
        refused(self.src, headers, BODY + b" ", path=path)
        tampered = f"/v1/webhooks/tw?bodySHA256={hashlib.sha256(b'x').hexdigest()}"
        refused(self.src, twilio_headers(url=PUBLIC + tampered, params={}), BODY, path=tampered)

    def test_sha256_shared_key_signature(self) -> None:
        url = PUBLIC + PATH
        signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, FORM, "HMAC_SHA256")
        headers = {
            "X-Twilio-Signature": signature,
            "X-Twilio-Webhooks-Signature-Settings": "key=sharedkey_1,algorithm=HMAC_SHA256",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        assert check(self.src, headers, self.body)
        headers["X-Twilio-Webhooks-Signature-Settings"] = "algorithm=HMAC_MD5"
        refused(self.src, headers, self.body)

    def test_failures(self) -> None:
        refused(self.src, twilio_headers("wrong"), self.body)
        refused(self.src, {"Content-Type": "application/x-www-form-urlencoded"}, self.body)
        refused(self.src, twilio_headers(), b"\xff=\xfe")  # not a form: no signature holds

    def test_forwarded_headers_are_not_trusted(self) -> None:
        signed_for = twilio_headers(url="https://proxy.example.org" + PATH)
        forwarded = dict(signed_for, **{"X-Forwarded-Host": "proxy.example.org"})
        refused(self.src, forwarded, self.body)


class TestStandardWebhooksPreset:
    src = source("standard-webhooks", STD_SECRET)

    def test_reference_library_signature(self) -> None:
        when = datetime.fromtimestamp(NOW, tz=UTC)
        signature = StandardWebhook(STD_SECRET).sign("msg_1", when, BODY.decode())
        headers = {"webhook-id": "msg_1", "webhook-timestamp": str(NOW)}
        verified = check(self.src, dict(headers, **{"webhook-signature": signature}))
        assert verified.webhook_id == "msg_1"
        refused(self.src, dict(headers, **{"webhook-signature": signature}), now=NOW + 301)


def test_every_failure_has_the_same_message() -> None:
    messages = {
        refused(TestStripe.src, {}),
        refused(TestSlack.src, {}),
        refused(TestShopify.src, {}),
        refused(TestGitHub.src, {}),
        refused(TestTwilio.src, {}),
    }
    assert messages == {"signature verification failed"}
