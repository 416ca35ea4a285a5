"""Signature checks against events signed by the reference Standard Webhooks and Svix libraries."""

from __future__ import annotations

import base64
import json
import os
import pickle
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook
from svix.webhooks import Webhook as SvixWebhook

from ingest.webhooks.signatures import (
    SignatureConfig,
    SignatureError,
    VerifiedSignature,
    check_signature_config,
    sign_hmac_sha256,
    sign_standard_webhook,
    verify_signature,
)

NOW = 1_700_000_000
BODY = json.dumps({"type": "user.created", "data": {"id": 42, "name": "Zoë"}}).encode()
FAILURE = "signature verification failed"
# int() would accept these digits; a signed timestamp is ASCII digits only.
ARABIC_INDIC_NOW = "".join(chr(0x0660 + int(digit)) for digit in str(NOW))


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


OLD_SECRET = new_secret()
NEW_SECRET = new_secret()


def standard_config(*secrets: str, tolerance: int = 300) -> SignatureConfig:
    return SignatureConfig("standard-webhooks", secrets=secrets, tolerance_seconds=tolerance)


def reference_headers(
    secret: str, msg_id: str = "msg_1", timestamp: int = NOW, body: bytes = BODY
) -> dict[str, str]:
    """Headers as the standardwebhooks library signs them."""
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    signature = StandardWebhook(secret).sign(msg_id, when, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def failure_message(config: SignatureConfig, headers: dict[str, str], body: bytes = BODY) -> str:
    with pytest.raises(SignatureError) as caught:
        verify_signature(config, headers, body, now=NOW)
    return str(caught.value)


class TestStandardWebhooks:
    def test_accepts_reference_library_signature(self) -> None:
        verified = verify_signature(
            standard_config(NEW_SECRET), reference_headers(NEW_SECRET), BODY, now=NOW
        )
        assert verified == VerifiedSignature(webhook_id="msg_1", timestamp=NOW)

    def test_accepts_svix_signature_under_svix_header_names(self) -> None:
        when = datetime.fromtimestamp(NOW, tz=UTC)
        signature = SvixWebhook(NEW_SECRET).sign("msg_svix", when, BODY.decode())
        headers = {"svix-id": "msg_svix", "svix-timestamp": str(NOW), "svix-signature": signature}
        verified = verify_signature(standard_config(NEW_SECRET), headers, BODY, now=NOW)
        assert verified.webhook_id == "msg_svix"

    def test_accepts_svix_signature_under_webhook_header_names(self) -> None:
        when = datetime.fromtimestamp(NOW, tz=UTC)
        signature = SvixWebhook(NEW_SECRET).sign("msg_2", when, BODY.decode())
        headers = {
            "webhook-id": "msg_2",
            "webhook-timestamp": str(NOW),
            "webhook-signature": signature,
        }
        assert verify_signature(standard_config(NEW_SECRET), headers, BODY, now=NOW)

    def test_our_signature_verifies_with_reference_library(self) -> None:
        headers = {
            "webhook-id": "msg_3",
            "webhook-timestamp": str(NOW),
            "webhook-signature": sign_standard_webhook(NEW_SECRET, "msg_3", NOW, BODY),
        }
        assert headers == reference_headers(NEW_SECRET, msg_id="msg_3")

    def test_header_names_are_case_insensitive(self) -> None:
        headers = {k.title(): v for k, v in reference_headers(NEW_SECRET).items()}
        assert verify_signature(standard_config(NEW_SECRET), headers, BODY, now=NOW)

    def test_unpadded_secret_is_accepted(self) -> None:
        secret = "whsec_" + base64.b64encode(os.urandom(31)).decode().rstrip("=")
        assert verify_signature(standard_config(secret), reference_headers(secret), BODY, now=NOW)

    def test_rotation_old_secret_still_accepted(self) -> None:
        config = standard_config(NEW_SECRET, OLD_SECRET)
        assert verify_signature(config, reference_headers(OLD_SECRET), BODY, now=NOW)

    def test_rotation_header_with_two_signatures(self) -> None:
        headers = reference_headers(OLD_SECRET)
        new_signature = reference_headers(NEW_SECRET)["webhook-signature"]
        headers["webhook-signature"] = f"{headers['webhook-signature']} {new_signature}"
        assert verify_signature(standard_config(NEW_SECRET), headers, BODY, now=NOW)

    def test_unknown_versions_and_bad_entries_are_skipped(self) -> None:
        headers = reference_headers(NEW_SECRET)
        headers["webhook-signature"] = f"v1a,abc v2,Zm9v v1,!!! {headers['webhook-signature']}"
        assert verify_signature(standard_config(NEW_SECRET), headers, BODY, now=NOW)

    def test_only_unknown_versions_fail(self) -> None:
        headers = reference_headers(NEW_SECRET)
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
        assert failure_message(standard_config(NEW_SECRET), headers) == FAILURE

    @pytest.mark.parametrize("offset", [-300, -1, 0, 1, 300])
    def test_timestamp_inside_tolerance(self, offset: int) -> None:
        headers = reference_headers(NEW_SECRET, timestamp=NOW + offset)
        assert verify_signature(standard_config(NEW_SECRET), headers, BODY, now=NOW)

    @pytest.mark.parametrize("offset", [-301, 301, -86_400, 86_400])
    def test_timestamp_outside_tolerance(self, offset: int) -> None:
        headers = reference_headers(NEW_SECRET, timestamp=NOW + offset)
        assert failure_message(standard_config(NEW_SECRET), headers) == FAILURE

    def test_configured_tolerance(self) -> None:
        headers = reference_headers(NEW_SECRET, timestamp=NOW - 20)
        assert verify_signature(standard_config(NEW_SECRET, tolerance=30), headers, BODY, now=NOW)
        with pytest.raises(SignatureError):
            verify_signature(standard_config(NEW_SECRET, tolerance=10), headers, BODY, now=NOW)

    def test_defaults_to_the_current_time(self) -> None:
        when = int(datetime.now(tz=UTC).timestamp())
        headers = reference_headers(NEW_SECRET, timestamp=when)
        assert verify_signature(standard_config(NEW_SECRET), headers, BODY)
        with pytest.raises(SignatureError):
            verify_signature(standard_config(NEW_SECRET), reference_headers(NEW_SECRET), BODY)

    def test_wrong_secret(self) -> None:
        headers = reference_headers(OLD_SECRET)
        assert failure_message(standard_config(NEW_SECRET), headers) == FAILURE

    def test_tampered_body(self) -> None:
        headers = reference_headers(NEW_SECRET)
        assert failure_message(standard_config(NEW_SECRET), headers, BODY + b" ") == FAILURE

    def test_tampered_id_or_timestamp(self) -> None:
        headers = reference_headers(NEW_SECRET)
        other_id = {**headers, "webhook-id": "msg_other"}
        other_time = {**headers, "webhook-timestamp": str(NOW + 1)}
        assert failure_message(standard_config(NEW_SECRET), other_id) == FAILURE
        assert failure_message(standard_config(NEW_SECRET), other_time) == FAILURE

    @pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
    def test_missing_header(self, missing: str) -> None:
        headers = reference_headers(NEW_SECRET)
        del headers[missing]
        assert failure_message(standard_config(NEW_SECRET), headers) == FAILURE

    @pytest.mark.parametrize(
        "name,value",
        [
            ("webhook-timestamp", "1700000000.5"),
            ("webhook-timestamp", "-1700000000"),
            ("webhook-timestamp", "soon"),
            ("webhook-timestamp", ARABIC_INDIC_NOW),
            ("webhook-timestamp", "9" * 400),
            ("webhook-signature", "v1,"),
            ("webhook-signature", "v1,not base64!"),
            ("webhook-signature", "v1"),
            ("webhook-signature", ",,,"),
            ("webhook-signature", "v1,ü"),
            ("webhook-id", "   "),
        ],
    )
    def test_garbage_header(self, name: str, value: str) -> None:
        headers = {**reference_headers(NEW_SECRET), name: value}
        assert failure_message(standard_config(NEW_SECRET), headers) == FAILURE

    @pytest.mark.parametrize("secret", ["whsec_***not-base64***", "whsec_", "whsec_QQ=A"])
    def test_secret_that_is_not_base64_never_matches(self, secret: str) -> None:
        headers = reference_headers(NEW_SECRET)
        assert failure_message(standard_config(secret), headers) == FAILURE

    def test_bad_secret_beside_a_good_one_is_skipped(self) -> None:
        config = standard_config("whsec_***", NEW_SECRET)
        assert verify_signature(config, reference_headers(NEW_SECRET), BODY, now=NOW)

    def test_no_secrets_never_match(self) -> None:
        assert failure_message(standard_config(), reference_headers(NEW_SECRET)) == FAILURE

    def test_body_of_wrong_type_is_a_signature_error(self) -> None:
        with pytest.raises(SignatureError):
            verify_signature(
                standard_config(NEW_SECRET), reference_headers(NEW_SECRET), "text body", now=NOW
            )  # type: ignore[arg-type]


class TestHmacSha256:
    SECRET = "gh-secret-ü"

    def config(self, prefix: str = "sha256=", *secrets: str) -> SignatureConfig:
        return SignatureConfig(
            "hmac-sha256",
            secrets=secrets or (self.SECRET,),
            header="X-Hub-Signature-256",
            prefix=prefix,
        )

    def test_github_style_with_prefix(self) -> None:
        headers = {"X-Hub-Signature-256": sign_hmac_sha256(self.SECRET, BODY)}
        assert headers["X-Hub-Signature-256"].startswith("sha256=")
        assert verify_signature(self.config(), headers, BODY) == VerifiedSignature()

    def test_without_prefix(self) -> None:
        headers = {"x-hub-signature-256": sign_hmac_sha256(self.SECRET, BODY, prefix="")}
        assert verify_signature(self.config(prefix=""), headers, BODY)

    def test_upper_case_hex_and_prefix(self) -> None:
        headers = {"X-HUB-SIGNATURE-256": sign_hmac_sha256(self.SECRET, BODY).upper()}
        assert verify_signature(self.config(), headers, BODY)

    def test_rotation(self) -> None:
        headers = {"X-Hub-Signature-256": sign_hmac_sha256("old", BODY)}
        assert verify_signature(self.config("sha256=", "new", "old"), headers, BODY)

    def test_missing_prefix_when_one_is_configured(self) -> None:
        headers = {"X-Hub-Signature-256": sign_hmac_sha256(self.SECRET, BODY, prefix="")}
        assert failure_message(self.config(), headers) == FAILURE

    def test_wrong_secret_and_tampered_body(self) -> None:
        headers = {"X-Hub-Signature-256": sign_hmac_sha256("other", BODY)}
        assert failure_message(self.config(), headers) == FAILURE
        headers = {"X-Hub-Signature-256": sign_hmac_sha256(self.SECRET, BODY)}
        assert failure_message(self.config(), headers, BODY[:-1]) == FAILURE

    @pytest.mark.parametrize(
        "value",
        ["", "sha256=", "sha256=zz", "sha256=" + "ä" * 64, "sha256=" + "0" * 63, "md5=" + "0" * 64],
    )
    def test_garbage_header(self, value: str) -> None:
        assert failure_message(self.config(), {"X-Hub-Signature-256": value}) == FAILURE

    def test_missing_header(self) -> None:
        assert failure_message(self.config(), {"X-Other": "x"}) == FAILURE


class TestNoneAndConfig:
    def test_none_accepts_anything(self) -> None:
        assert verify_signature(SignatureConfig("none"), {}, b"\xff") == VerifiedSignature()

    def test_unknown_scheme_is_refused_at_construction(self) -> None:
        with pytest.raises(ValueError, match="unknown signature scheme"):
            SignatureConfig("md5")

    def test_secrets_list_becomes_a_tuple(self) -> None:
        config = SignatureConfig("hmac-sha256", secrets=["a", "b"])  # type: ignore[arg-type]
        assert config.secrets == ("a", "b")

    def test_check_config(self) -> None:
        check_signature_config(SignatureConfig("none"))
        check_signature_config(standard_config(NEW_SECRET))
        with pytest.raises(ValueError, match="at least one secret"):
            check_signature_config(SignatureConfig("hmac-sha256"))
        with pytest.raises(ValueError, match="secret #2"):
            check_signature_config(standard_config(NEW_SECRET, "whsec_***"))

    def test_error_message_is_uniform_and_picklable(self) -> None:
        error = SignatureError("timestamp too old")
        assert str(error) == FAILURE
        assert str(pickle.loads(pickle.dumps(error))) == FAILURE
