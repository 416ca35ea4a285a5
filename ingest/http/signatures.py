"""Webhook signature checks: Standard Webhooks, GitHub-style hex HMAC-SHA256, or none.

Every failure raises the same ``SignatureError`` so that a caller cannot learn which part failed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "SCHEMES",
    "SignatureConfig",
    "SignatureError",
    "VerifiedSignature",
    "check_signature_config",
    "sign_hmac_sha256",
    "sign_standard_webhook",
    "verify_signature",
]

SCHEMES = ("standard-webhooks", "hmac-sha256", "none")
_FAILURE = "signature verification failed"
_SECRET_PREFIX = "whsec_"
# Svix sends the same scheme under its own header names; accepting them costs nothing.
_STANDARD_HEADERS = {
    "id": ("webhook-id", "svix-id"),
    "timestamp": ("webhook-timestamp", "svix-timestamp"),
    "signature": ("webhook-signature", "svix-signature"),
}
# Integer seconds only: a float or signed value is not what the sender signed as a timestamp.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class SignatureError(Exception):
    """A request's signature is missing, wrong, malformed or outside the tolerance window."""

    def __init__(self, *_: object) -> None:
        # Ignoring arguments keeps the message uniform and lets the exception survive pickling.
        super().__init__(_FAILURE)


@dataclass(frozen=True)
class SignatureConfig:
    """How one webhook source signs its requests."""

    scheme: str
    secrets: tuple[str, ...] = ()
    header: str = "X-Hub-Signature-256"
    prefix: str = "sha256="
    tolerance_seconds: int = 300

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown signature scheme {self.scheme!r}; expected one of {SCHEMES}")
        # Callers often hold a list from JSON; a tuple keeps the config hashable and immutable.
        object.__setattr__(self, "secrets", tuple(self.secrets))


@dataclass(frozen=True)
class VerifiedSignature:
    """What a successful check learned: the Standard Webhooks message id and timestamp."""

    webhook_id: str | None = None
    timestamp: int | None = None


def check_signature_config(config: SignatureConfig) -> None:
    """Raise ``ValueError`` naming the problem when ``config`` could never verify a request."""
    if config.scheme == "none":
        return
    if not config.secrets:
        raise ValueError(f"signature scheme {config.scheme!r} needs at least one secret")
    if config.scheme == "standard-webhooks":
        if config.tolerance_seconds < 1:
            raise ValueError("toleranceSeconds must be at least 1")
        for index, secret in enumerate(config.secrets):
            if _standard_key(secret) is None:
                raise ValueError(f"secret #{index + 1} is not whsec_ followed by base64")
    elif not config.header:
        raise ValueError("hmac-sha256 needs a header name")


def verify_signature(
    config: SignatureConfig,
    headers: Mapping[str, str],
    body: bytes,
    now: float | None = None,
) -> VerifiedSignature:
    """Check ``body`` and ``headers`` against ``config``; raise ``SignatureError`` unless valid."""
    if config.scheme == "none":
        return VerifiedSignature()
    try:
        lowered = _lower_keys(headers)
        raw = bytes(body)
        if config.scheme == "standard-webhooks":
            return _verify_standard(config, lowered, raw, time.time() if now is None else now)
        if config.scheme == "hmac-sha256":
            _verify_hmac(config, lowered, raw)
            return VerifiedSignature()
    except SignatureError:
        raise
    except Exception as exc:
        # Malformed input of any kind must surface as the one uniform failure.
        raise SignatureError() from exc
    raise SignatureError()


def sign_standard_webhook(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return a ``webhook-signature`` value (``v1,<base64>``) for ``body``."""
    key = _standard_key(secret)
    if key is None:
        raise ValueError("secret is not whsec_ followed by base64")
    digest = hmac.new(key, _standard_content(msg_id, str(timestamp), body), hashlib.sha256)
    return "v1," + base64.b64encode(digest.digest()).decode("ascii")


def sign_hmac_sha256(secret: str, body: bytes, prefix: str = "sha256=") -> str:
    """Return ``prefix`` followed by the hex HMAC-SHA256 of ``body`` keyed by ``secret`` (UTF-8)."""
    return prefix + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    # Werkzeug's Headers and plain dicts both offer items(); the last of repeated names wins.
    return {str(name).lower(): value for name, value in headers.items() if isinstance(value, str)}


def _first_header(headers: Mapping[str, str], names: tuple[str, ...]) -> str:
    for name in names:
        value = headers.get(name, "").strip()
        if value:
            return value
    raise SignatureError()


def _verify_standard(
    config: SignatureConfig, headers: Mapping[str, str], body: bytes, now: float
) -> VerifiedSignature:
    msg_id = _first_header(headers, _STANDARD_HEADERS["id"])
    timestamp_text = _first_header(headers, _STANDARD_HEADERS["timestamp"])
    signature_header = _first_header(headers, _STANDARD_HEADERS["signature"])
    if not _TIMESTAMP.fullmatch(timestamp_text):
        raise SignatureError()
    timestamp = int(timestamp_text)
    if abs(now - timestamp) > config.tolerance_seconds:
        raise SignatureError()
    offered = _offered_v1_signatures(signature_header)
    content = _standard_content(msg_id, timestamp_text, body)
    matched = False
    for secret in config.secrets:
        key = _standard_key(secret)
        if key is None:
            continue
        expected = hmac.digest(key, content, "sha256")
        # No early exit: the time taken should not depend on which pair matched.
        for candidate in offered:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError()
    return VerifiedSignature(webhook_id=msg_id, timestamp=timestamp)


def _offered_v1_signatures(header: str) -> list[bytes]:
    """Decode the ``v1`` entries of a ``webhook-signature`` header, skipping anything else."""
    offered = []
    for entry in header.split():
        version, _, encoded = entry.partition(",")
        if version != "v1":
            continue
        try:
            offered.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return offered


def _standard_content(msg_id: str, timestamp_text: str, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp_text}.".encode() + body


@lru_cache(maxsize=256)  # a source's few secrets, decoded once rather than on every request
def _standard_key(secret: str) -> bytes | None:
    """Decode a ``whsec_`` secret; None when it is not base64, so a bad secret never matches."""
    encoded = secret.removeprefix(_SECRET_PREFIX).strip()
    # Some providers hand out unpadded base64; the reference library pads it too.
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    return key or None


def _verify_hmac(config: SignatureConfig, headers: Mapping[str, str], body: bytes) -> None:
    value = headers.get(config.header.lower(), "").strip()
    prefix = config.prefix
    if prefix:
        if value[: len(prefix)].lower() != prefix.lower():
            raise SignatureError()
        value = value[len(prefix) :]
    # Checking the shape first keeps compare_digest on ASCII and rejects garbage early.
    if not _HEX_SHA256.fullmatch(value):
        raise SignatureError()
    offered = value.lower().encode("ascii")
    matched = False
    for secret in config.secrets:
        expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
        matched |= hmac.compare_digest(expected.encode("ascii"), offered)
    if not matched:
        raise SignatureError()
