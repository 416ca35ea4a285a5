"""Secrets masked out of anything printed or logged: config dumps, headers, URLs."""

from __future__ import annotations

import re
from typing import Any

from ingest.config import Settings

__all__ = ["MASK", "mask_url", "masked_settings", "scrub_mapping"]

MASK = "***"
SECRET_KEYS = {
    "secrets",
    "adminToken",
    "sentryDsn",
    "password",
    "token",
    "secret",
    "authorization",
    "webhook-signature",
    "x-hub-signature-256",
    "x-hub-signature",
    "cookie",
    "idempotency-key",
}
_URL_PASSWORD = re.compile(r"^(?P<scheme>[a-z0-9+.-]+://)(?P<user>[^:@/]*):(?P<pw>[^@/]+)@", re.I)


def mask_url(url: str) -> str:
    """``redis://user:pw@host`` becomes ``redis://user:***@host``."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", url)


def scrub_mapping(value: Any) -> Any:
    """A copy of ``value`` with secret keys masked and passwords removed from URLs."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if str(key).lower() in {k.lower() for k in SECRET_KEYS} and item not in (None, [], ""):
                out[key] = [MASK] * len(item) if isinstance(item, list) else MASK
            else:
                out[key] = scrub_mapping(item)
        return out
    if isinstance(value, list):
        return [scrub_mapping(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    return value


def masked_settings(settings: Settings) -> dict[str, Any]:
    """The effective settings as JSON-ready camelCase data, secrets masked."""
    return dict(scrub_mapping(settings.model_dump(mode="json", by_alias=True)))
