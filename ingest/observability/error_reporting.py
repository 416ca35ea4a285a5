"""Error reporting to Sentry, on only when ``observability.sentryDsn`` (``SENTRY_DSN``) is set,
with signature headers, tokens, secrets and request bodies kept out of every event.

The web and worker adapters pass their framework integrations (Flask, Celery) in; this module
imports neither framework.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import sentry_sdk
from sentry_sdk.integrations import Integration
from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

from ingest.masking import MASK, mask_url

__all__ = ["init_error_reporting", "scrub_event", "scrub_value"]

# Keys whose values are secret wherever they appear: headers, frame variables, extras.
_SECRET_KEY = re.compile(
    r"secret|token|passw|signature|authorization|cookie|api[-_]?key|idempotency[-_]key"
    r"|credential|private[-_]?key|dsn",
    re.IGNORECASE,
)
# Secrets that show up inside free text: log messages, exception messages, query strings.
_SECRET_TEXT = (
    (re.compile(r"whsec_[A-Za-z0-9+/=_-]+"), "whsec_" + MASK),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + MASK),
    (re.compile(r"(?i)\bsha(1|256)=[0-9a-f]{16,}"), r"sha\1=" + MASK),
    (re.compile(r"\bv1,[A-Za-z0-9+/]{16,}={0,2}"), "v1," + MASK),
    (
        re.compile(r"(?i)\b((?:[a-z_]*token|secret|password|signature|api_?key)=)[^&\s]+"),
        r"\1" + MASK,
    ),
)
# Header names for Sentry's own scrubber too (it covers frame variables of every depth).
_DENYLIST = [
    *DEFAULT_DENYLIST,
    "webhook-signature",
    "webhook_signature",
    "x-hub-signature-256",
    "x_hub_signature_256",
    "x-hub-signature",
    "idempotency-key",
    "idempotency_key",
    "secrets",
    "admin_token",
    "sentry_dsn",
]


def scrub_value(value: Any, key: str | None = None) -> Any:
    """A copy of ``value`` with secret keys masked and secrets removed from strings."""
    if key is not None and _SECRET_KEY.search(key) and value not in (None, "", [], {}):
        return MASK
    if isinstance(value, dict):
        return {k: scrub_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        # Sentry sends headers and query pairs as [name, value] lists.
        if len(value) == 2 and isinstance(value[0], str) and _SECRET_KEY.search(value[0]):
            return [value[0], MASK]
        return [scrub_value(v) for v in value]
    if isinstance(value, str):
        for pattern, replacement in _SECRET_TEXT:
            value = pattern.sub(replacement, value)
        return mask_url(value) if "://" in value else value
    return value


def scrub_event(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sentry's ``before_send``: the event with secrets masked and no request body."""
    scrubbed: dict[str, Any] = scrub_value(event)
    request = scrubbed.get("request")
    if isinstance(request, dict):
        # Webhook bodies are partners' data; they never leave for an error tracker.
        request.pop("data", None)
    return scrubbed


def init_error_reporting(
    dsn: str | None,
    integrations: Sequence[Integration],
    transport: Any = None,
    **options: Any,
) -> bool:
    """Start Sentry with ``integrations`` when ``dsn`` is set; returns whether it started.

    ``SENTRY_ENVIRONMENT`` and ``SENTRY_RELEASE`` are read by the SDK itself.
    """
    if not dsn:
        return False
    sentry_sdk.init(
        dsn=dsn,
        integrations=list(integrations),
        # Only the integrations named here: a worker does not need Flask's, and so on.
        auto_enabling_integrations=False,
        max_request_body_size="never",
        before_send=scrub_event,  # type: ignore[arg-type]
        event_scrubber=EventScrubber(denylist=_DENYLIST, recursive=True),
        # Traces go through OpenTelemetry (ingest.observability.tracing); Sentry reports errors.
        traces_sample_rate=None,
        transport=transport,
        **options,
    )
    return True
