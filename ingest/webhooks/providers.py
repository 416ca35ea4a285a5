"""Provider presets of webhook sources, and what the hot path asks of a source because of them.

A source's ``provider`` (``stripe``, ``github``, ``shopify``, ``slack``, ``twilio``,
``standard-webhooks``) fills in what that provider documents: the signature scheme and its
header, the idempotency key (a delivery id header or an event field) and where ``observedAt``
comes from. :meth:`ingest.webhooks.intake.WebhookSource.from_config` applies a preset under the
settings a source gives explicitly; the functions below are what a request handler calls:

- :func:`media_kind` / :func:`decode_event`: the media types a source accepts (form bodies for
  Twilio and Slack) and the event a body holds;
- :func:`verify_request`: the signature check of any scheme, Twilio's URL included;
- :func:`provider_key`: the provider's delivery or event id, before the contract's fallbacks;
- :func:`slack_challenge`: the answer to Slack's ``url_verification`` handshake;
- :func:`event_observed_at`: the event's ``observedAt``.

Framework-free: headers come as a mapping with lower-case names, the request as bytes and
the path and query as received (:func:`request_target` finds them in a WSGI environ).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from ingest.webhooks.bodies import (
    BodyError,
    MediaKind,
    ParsedEvent,
    check_media_type,
    parse_event,
    parse_form,
    parse_form_event,
)
from ingest.webhooks.idempotency import event_key
from ingest.webhooks.signatures import (
    SignatureError,
    VerifiedSignature,
    verify_signature,
    verify_twilio,
)

if TYPE_CHECKING:
    from ingest.webhooks.intake import WebhookSource

__all__ = [
    "PRESETS",
    "Preset",
    "decode_event",
    "event_observed_at",
    "media_kind",
    "provider_key",
    "request_target",
    "slack_challenge",
    "verify_request",
]


@dataclass(frozen=True)
class Preset:
    """What a provider documents about its webhooks; ``None`` leaves a setting at its default."""

    scheme: str
    header: str | None = None  # hmac-sha256 only: the other schemes name their own headers
    prefix: str | None = None
    encoding: str | None = None
    tolerance_seconds: int | None = None
    id_header: str | None = None
    id_field: str | None = None
    observed_at_field: str | None = None
    observed_at_header: str | None = None
    form_bodies: bool = False


PRESETS: dict[str, Preset] = {
    # https://docs.stripe.com/webhooks#verify-manually: 5 minutes is the libraries' default.
    "stripe": Preset(
        scheme="stripe", tolerance_seconds=300, id_field="id", observed_at_field="created"
    ),
    # https://docs.github.com/webhooks/using-webhooks/validating-webhook-deliveries
    "github": Preset(
        scheme="hmac-sha256",
        header="X-Hub-Signature-256",
        prefix="sha256=",
        encoding="hex",
        id_header="X-GitHub-Delivery",
    ),
    # https://shopify.dev/docs/apps/build/webhooks/subscribe/https#step-2-validate-the-origin-of-your-webhook-to-ensure-its-coming-from-shopify
    "shopify": Preset(
        scheme="hmac-sha256",
        header="X-Shopify-Hmac-Sha256",
        prefix="",
        encoding="base64",
        id_header="X-Shopify-Webhook-Id",
        observed_at_header="X-Shopify-Triggered-At",
    ),
    # https://api.slack.com/authentication/verifying-requests-from-slack: 5 minutes.
    "slack": Preset(
        scheme="slack",
        tolerance_seconds=300,
        id_field="event_id",
        observed_at_field="event_time",
        form_bodies=True,
    ),
    # https://www.twilio.com/docs/usage/webhooks/webhooks-security
    "twilio": Preset(scheme="twilio", id_header="I-Twilio-Idempotency-Token", form_bodies=True),
    # https://www.standardwebhooks.com/: webhook-id and webhook-timestamp serve by default.
    "standard-webhooks": Preset(
        scheme="standard-webhooks", tolerance_seconds=300, id_header="webhook-id"
    ),
}


def media_kind(source: WebhookSource, content_type: str | None, allow_ndjson: bool) -> MediaKind:
    """The kind of a request's body (``json``, ``ndjson``, ``form``); ``UnsupportedMediaType``
    (415) for a media type the source does not take. Forms only for one event per request."""
    return check_media_type(content_type, allow_ndjson, source.form_bodies and not allow_ndjson)


def decode_event(
    source: WebhookSource, content_type: str | None, body: bytes, max_depth: int
) -> ParsedEvent:
    """The event of a single-event body: a JSON object, or the JSON object of a form's fields.

    Raises ``UnsupportedMediaType`` (415) for a media type the source does not take and
    ``MalformedBody`` (400) for a body that is not what its media type says.
    """
    if media_kind(source, content_type, False) == "form":
        return parse_form_event(body)
    return parse_event(body, max_depth)


def verify_request(
    source: WebhookSource,
    headers: Mapping[str, str],
    body: bytes,
    path_and_query: str,
    form: Mapping[str, str | list[str]] | None = None,
    now: float | None = None,
) -> VerifiedSignature:
    """Check a request's signature by its source's scheme; ``SignatureError`` on any failure.

    ``headers`` by lower-case name; ``body`` as decoded (after gzip); ``path_and_query`` as the
    request line had them (Twilio signs the URL). ``form`` is the form's fields when the caller
    parsed them already; otherwise a form body is parsed here when Twilio needs its fields.
    """
    config = source.signature
    if config.scheme != "twilio":
        return verify_signature(config, headers, body, now)
    if source.public_url is None:
        raise SignatureError()  # from_config refuses this; never verify against a guessed URL
    if form is None and _is_form(headers.get("content-type")):
        try:
            form = parse_form(body)
        except BodyError:
            raise SignatureError() from None
    verify_twilio(config, headers, source.public_url + path_and_query, body, form)
    return VerifiedSignature()


def _is_form(content_type: str | None) -> bool:
    return (content_type or "").partition(";")[0].strip().lower() == (
        "application/x-www-form-urlencoded"
    )


def provider_key(
    source: WebhookSource, headers: Mapping[str, str], event: object | None
) -> str | None:
    """The provider's id of a delivery or event, the idempotency key before every fallback of
    the contract: the source's ``idHeader`` when sent, else, for a source with a provider,
    its ``idField`` (Stripe's event ``id``, Slack's ``event_id``); None when neither is there."""
    if source.id_header:
        value = headers.get(source.id_header.lower(), "").strip()
        if value:
            return value
    if source.provider and source.id_field:
        return event_key(event, source.id_field, "") or None
    return None


def slack_challenge(source: WebhookSource, event: Mapping[str, Any]) -> dict[str, str] | None:
    """The JSON answer to Slack's ``url_verification`` request (verified before this is
    asked), or None for any other event; the handshake is answered, not stored."""
    if source.signature.scheme != "slack" and source.provider != "slack":
        return None
    challenge = event.get("challenge")
    if event.get("type") == "url_verification" and isinstance(challenge, str):
        return {"challenge": challenge}
    return None


def event_observed_at(
    source: WebhookSource, headers: Mapping[str, str], event: Mapping[str, Any]
) -> str | None:
    """When the event was observed: the source's ``observedAtField`` when it holds a time,
    else its ``observedAtHeader`` (epoch seconds or ISO 8601), else ``webhook-timestamp``."""
    observed_at = _intake_observed_at()
    found = observed_at(event, source.observed_at_field, None)
    if found is not None:
        return found
    if source.observed_at_header:
        text = headers.get(source.observed_at_header.lower(), "").strip()
        if text and not text.isdigit():
            return text if _is_iso_time(text) else None
        if text:
            return observed_at({}, None, text)
    return observed_at({}, None, headers.get("webhook-timestamp"))


@lru_cache(maxsize=1)
def _intake_observed_at() -> Any:
    """``ingest.webhooks.intake.observed_at``, imported on first use (intake imports this
    module), and then without an import statement per request."""
    from ingest.webhooks.intake import observed_at

    return observed_at


def _is_iso_time(text: str) -> bool:
    if len(text) > 64:
        return False
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def request_target(environ: Mapping[str, Any]) -> str:
    """The path and query of a WSGI request as the client sent them.

    gunicorn keeps the request line's target in ``RAW_URI`` (werkzeug in ``REQUEST_URI``);
    without either, the path is quoted back from ``PATH_INFO`` as WSGI decoded it.
    """
    query = str(environ.get("QUERY_STRING", ""))
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if isinstance(raw, str) and raw:
        if raw.startswith(("http://", "https://")):  # absolute-form: keep path and query
            parts = urlsplit(raw)
            raw = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # werkzeug's test client leaves the query out of both; servers keep it in.
        return raw if "?" in raw or not query else f"{raw}?{query}"
    path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
    path = quote(path.encode("latin-1").decode("utf-8", "replace"), safe="/:@!$&'()*+,;=-._~")
    return path + (f"?{query}" if query else "")
