"""Reading a webhook request: its body within limits, its headers once, its URL; and the
refusals (an ``ApiError`` with the metrics reason its answer counts under)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, cast

import gevent
from werkzeug.wsgi import get_current_url

from ingest.observability.metrics import Reason
from ingest.webhooks.bodies import (
    BodyError,
    BodyTimedOut,
    MediaKind,
    check_content_encoding,
    check_media_type,
    decode_body,
    read_body,
)
from ingest.webhooks.intake import WebhookSource
from ingest.webhooks.providers import media_kind
from ingest.webhooks.signatures import LoweredHeaders
from webapp.errors import ApiError

if TYPE_CHECKING:
    from webapp.webhooks import Services

__all__ = ["base_url", "lowered_headers", "read_request", "refusal"]

_BASE_URL_INPUTS = (
    "wsgi.url_scheme",
    "HTTP_HOST",
    "SERVER_NAME",
    "SERVER_PORT",
    "SCRIPT_NAME",
    "PATH_INFO",
)
_BASE_URLS_KEPT = 256
_BODY_HEADERS = frozenset({"HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"})
_base_urls: dict[tuple[Any, ...], str] = {}


def refusal(
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    reason: Reason | None = None,
    **fields: Any,
) -> ApiError:
    """An :class:`ApiError` carrying the metrics reason its answer counts under."""
    error = ApiError(status, message, headers, **fields)
    error.reason = reason  # type: ignore[attr-defined]
    return error


def read_request(
    services: Services,
    environ: Mapping[str, Any],
    allow_ndjson: bool,
    source: WebhookSource | None = None,
) -> tuple[bytes, MediaKind]:
    """The decoded body and its media kind, or the 415/413/408/400 that refuses it.

    With ``source``, the media types its provider sends are accepted (form bodies for Twilio
    and Slack commands)."""
    limit, seconds = services.http.max_body_bytes, services.http.body_timeout
    try:
        gzipped = check_content_encoding(environ.get("HTTP_CONTENT_ENCODING"))
        ctype = environ.get("CONTENT_TYPE")
        if source is not None:
            kind = media_kind(source, ctype, allow_ndjson)
        else:
            kind = check_media_type(ctype, allow_ndjson)
        length = _content_length(environ)
        stream = environ["wsgi.input"]
        if length is None and not environ.get("wsgi.input_terminated"):
            raw = b""  # as werkzeug: no length and no chunked framing means no body
        else:
            # gunicorn's gevent worker has no deadline for a body: without this a client that
            # sends headers and then stalls would hold its connection and greenlet for good.
            late = BodyTimedOut(f"the request body did not arrive within {seconds:g} s")
            with gevent.Timeout(seconds, late):
                raw = read_body(stream.read, length, limit)
        return decode_body(raw, gzipped, limit), kind
    except BodyTimedOut as exc:
        # The rest of the body may still come: close rather than read it as the next request.
        raise refusal(exc.status, exc.message, {"Connection": "close"}) from None
    except BodyError as exc:
        raise refusal(exc.status, exc.message) from None


def _content_length(environ: Mapping[str, Any]) -> int | None:
    text = environ.get("CONTENT_LENGTH")
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value >= 0 else None


def lowered_headers(environ: Mapping[str, Any]) -> LoweredHeaders:
    """The request's headers by lower-case name, read once from the WSGI environ.

    WSGI holds one value per name (the server joins repeats), as werkzeug's ``Headers`` does.
    The signature and idempotency checks take the result as it is, without lowering it again.
    """
    found = LoweredHeaders(
        (_header_name(name), value)
        for name, value in environ.items()
        if name.startswith("HTTP_") and name not in _BODY_HEADERS
    )
    for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):  # as werkzeug: from these, when not empty
        if environ.get(name):
            found[name.replace("_", "-").lower()] = environ[name]
    return found


@lru_cache(maxsize=512)  # the same few header names arrive on every request
def _header_name(environ_name: str) -> str:
    return environ_name[5:].replace("_", "-").lower()


def base_url(environ: Mapping[str, Any]) -> str:
    """The request's URL without its query, remembered by the environ values it is made of.

    A webhook endpoint sees the same few URLs all day; at most ``_BASE_URLS_KEPT`` are kept,
    so Host headers made up by clients cannot grow the table.
    """
    key = tuple(environ.get(name) for name in _BASE_URL_INPUTS)
    found = _base_urls.get(key)
    if found is None:
        found = get_current_url(cast(Any, environ), strip_querystring=True)
        if len(_base_urls) < _BASE_URLS_KEPT:
            _base_urls[key] = found
    return found
