"""Webhook signature checks: Standard Webhooks, HMAC-SHA256 of the body (GitHub's hex, Shopify's
base64), Stripe's and Slack's timestamped HMACs, Twilio's HMAC-SHA1 of URL and form, or none.

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
from urllib.parse import SplitResult, parse_qsl, urlsplit, urlunsplit

__all__ = [
    "SCHEMES",
    "LoweredHeaders",
    "SignatureConfig",
    "SignatureError",
    "VerifiedSignature",
    "check_signature_config",
    "lower_keys",
    "sign_hmac_sha256",
    "sign_standard_webhook",
    "verify_signature",
    "verify_twilio",
]

SCHEMES = ("standard-webhooks", "hmac-sha256", "stripe", "slack", "twilio", "none")
ENCODINGS = ("hex", "base64")
# Schemes whose signed string carries a timestamp checked against toleranceSeconds.
TIMESTAMPED = ("standard-webhooks", "stripe", "slack")
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
_B64_SHA256 = re.compile(r"[A-Za-z0-9+/]{43}=")


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
    encoding: str = "hex"  # hmac-sha256: "hex" (GitHub) or "base64" (Shopify)

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown signature scheme {self.scheme!r}; expected one of {SCHEMES}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {self.encoding!r}; expected one of {ENCODINGS}")
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
    if config.scheme in TIMESTAMPED and config.tolerance_seconds < 1:
        raise ValueError("toleranceSeconds must be at least 1")
    if config.scheme == "standard-webhooks":
        for index, secret in enumerate(config.secrets):
            if _standard_key(secret) is None:
                raise ValueError(f"secret #{index + 1} is not whsec_ followed by base64")
    elif config.scheme == "hmac-sha256" and not config.header:
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
        lowered = lower_keys(headers)
        raw = bytes(body)
        if config.scheme == "standard-webhooks":
            return _verify_standard(config, lowered, raw, time.time() if now is None else now)
        if config.scheme == "hmac-sha256":
            _verify_hmac(config, lowered, raw)
            return VerifiedSignature()
        if config.scheme in ("stripe", "slack"):
            clock = time.time() if now is None else now
            verify = _verify_stripe if config.scheme == "stripe" else _verify_slack
            return verify(config, lowered, raw, clock)
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


class LoweredHeaders(dict[str, str]):
    """Headers whose names are lower-case already and whose values are text (as the web reads
    them from the WSGI environ): the checks here use them as they are, without a copy."""


def lower_keys(headers: Mapping[str, str]) -> Mapping[str, str]:
    """Text-valued headers by lower-case name; :class:`LoweredHeaders` as they are."""
    if type(headers) is LoweredHeaders:
        return headers
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
    if config.encoding == "base64":
        # Base64 is case-sensitive: compared as sent, after a shape check like the hex one.
        if not _B64_SHA256.fullmatch(value):
            raise SignatureError()
        offered = value.encode("ascii")
    else:
        # Checking the shape first keeps compare_digest on ASCII and rejects garbage early.
        if not _HEX_SHA256.fullmatch(value):
            raise SignatureError()
        offered = value.lower().encode("ascii")
    matched = False
    for secret in config.secrets:
        digest = hmac.digest(secret.encode("utf-8"), body, "sha256")
        expected = base64.b64encode(digest) if config.encoding == "base64" else digest.hex()
        matched |= hmac.compare_digest(_ascii(expected), offered)
    if not matched:
        raise SignatureError()


def _ascii(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("ascii")


def _checked_timestamp(text: str, config: SignatureConfig, now: float) -> int:
    if not _TIMESTAMP.fullmatch(text):
        raise SignatureError()
    timestamp = int(text)
    if abs(now - timestamp) > config.tolerance_seconds:
        raise SignatureError()
    return timestamp


def _any_hex_match(config: SignatureConfig, content: bytes, offered: list[str]) -> bool:
    """Whether any secret's hex HMAC-SHA256 of ``content`` is among ``offered``, no early exit."""
    candidates = [o.lower().encode("ascii") for o in offered if _HEX_SHA256.fullmatch(o)]
    matched = False
    for secret in config.secrets:
        expected = hmac.new(secret.encode("utf-8"), content, hashlib.sha256).hexdigest()
        for candidate in candidates:
            matched |= hmac.compare_digest(expected.encode("ascii"), candidate)
    return matched


def _verify_stripe(
    config: SignatureConfig, headers: Mapping[str, str], body: bytes, now: float
) -> VerifiedSignature:
    """``Stripe-Signature: t=<ts>,v1=<hex>[,v1=<hex>...]`` over ``"{t}.{body}"``; the secret
    (``whsec_...``) is the HMAC key as it stands, as Stripe's libraries use it."""
    stamps: list[str] = []
    offered: list[str] = []
    for item in headers.get("stripe-signature", "").split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            stamps.append(value.strip())
        elif name == "v1":
            offered.append(value.strip())
    if len(stamps) != 1 or not offered:
        raise SignatureError()
    timestamp = _checked_timestamp(stamps[0], config, now)
    if not _any_hex_match(config, stamps[0].encode("ascii") + b"." + body, offered):
        raise SignatureError()
    return VerifiedSignature(timestamp=timestamp)


def _verify_slack(
    config: SignatureConfig, headers: Mapping[str, str], body: bytes, now: float
) -> VerifiedSignature:
    """``X-Slack-Signature: v0=<hex>`` over ``"v0:{X-Slack-Request-Timestamp}:{body}"``."""
    stamp = headers.get("x-slack-request-timestamp", "").strip()
    timestamp = _checked_timestamp(stamp, config, now)
    version, _, value = headers.get("x-slack-signature", "").strip().partition("=")
    if version != "v0" or not _any_hex_match(config, f"v0:{stamp}:".encode() + body, [value]):
        raise SignatureError()
    return VerifiedSignature(timestamp=timestamp)


def verify_twilio(
    config: SignatureConfig,
    headers: Mapping[str, str],
    url: str,
    body: bytes,
    form: Mapping[str, str | list[str]] | None,
) -> None:
    """Check ``X-Twilio-Signature``: base64 HMAC-SHA1 of ``url`` followed, for a form body, by
    each field name and its value in name order (repeated values sorted). A JSON body is
    covered by the URL's ``bodySHA256`` query parameter instead, which must be its SHA-256.
    HMAC-SHA256 when ``X-Twilio-Webhooks-Signature-Settings`` names it (a SharedKey).

    ``url`` is the full URL the provider requested; like Twilio's own validator, it is tried
    without and with the scheme's default port, since either may have been signed.
    """
    try:
        lowered = lower_keys(headers)
        offered = lowered.get("x-twilio-signature", "").strip()
        algorithm = _twilio_algorithm(lowered.get("x-twilio-webhooks-signature-settings", ""))
        if algorithm is None or not _B64_DIGEST[algorithm].fullmatch(offered):
            raise SignatureError()
        parts = urlsplit(url)
        if form is None:
            hashes = [
                v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k == "bodySHA256"
            ]
            if len(hashes) != 1 or not hmac.compare_digest(
                hashlib.sha256(bytes(body)).hexdigest().encode("ascii"), _ascii(hashes[0].lower())
            ):
                raise SignatureError()
        tail = "".join(
            name + value
            for name in sorted((form or {}).keys())
            for value in sorted(set(_values((form or {})[name])))
        ).encode("utf-8")
        matched = False
        for candidate in _twilio_urls(parts):
            content = candidate.encode("utf-8") + tail
            for secret in config.secrets:
                digest = base64.b64encode(hmac.digest(secret.encode(), content, algorithm))
                matched |= hmac.compare_digest(digest, offered.encode("ascii"))
    except SignatureError:
        raise
    except Exception as exc:
        raise SignatureError() from exc
    if not matched:
        raise SignatureError()


_B64_DIGEST = {
    "sha1": re.compile(r"[A-Za-z0-9+/]{27}="),
    "sha256": re.compile(r"[A-Za-z0-9+/]{43}="),
}
_TWILIO_ALGORITHMS = {"HMAC_SHA1": "sha1", "HMAC_SHA256": "sha256"}


def _twilio_algorithm(settings: str) -> str | None:
    """The digest named by ``key=...,algorithm=HMAC_SHA256``; SHA-1 without one; None when
    it names one this code does not know."""
    for part in settings.split(","):
        name, separator, value = part.partition("=")
        if separator and name.strip() == "algorithm" and value.strip():
            return _TWILIO_ALGORITHMS.get(value.strip().upper())
    return "sha1"


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _values(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _twilio_urls(parts: SplitResult) -> list[str]:
    """The URL without its port and with the scheme's default port (when it had none)."""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    userinfo = parts.netloc.rpartition("@")[0]
    base = f"{userinfo}@{host}" if userinfo else host
    without = urlunsplit(parts._replace(netloc=base))
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    with_port = urlunsplit(parts._replace(netloc=f"{base}:{port}")) if port else without
    return [without] if with_port == without else [without, with_port]
