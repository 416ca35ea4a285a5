"""The webhook endpoints: verified, rate-limited, idempotent events, answered 202 once published.

Checks run in the order of the contract: source (404), encoding and media type (415), size
(413), backpressure (503), signature (401), rate limits (429, or 413 for a batch no bucket
could ever pay), body (400), idempotency (200/409/422); then the event is published in a
batch (202, or 503 when the broker is down).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar, cast

import gevent
import redis
from flask import Blueprint, Response, current_app, jsonify, request
from flask.blueprints import BlueprintSetupState

from ingest.config import ConfigError, HttpConfig, Settings
from ingest.http.backpressure import QueueDepthGauge
from ingest.http.bodies import (
    BodyError,
    BodyTimedOut,
    MediaKind,
    ParsedEvent,
    check_content_encoding,
    check_media_type,
    decode_body,
    parse_batch,
    read_body,
)
from ingest.http.idempotency import (
    Claim,
    ClaimOutcome,
    IdempotencyStore,
    event_key,
    idempotency_key,
)
from ingest.http.intake import (
    WebhookSource,
    batch_statuses,
    epoch_to_iso,
    observed_at,
    webhook_sources,
)
from ingest.http.providers import (
    decode_event,
    event_observed_at,
    media_kind,
    provider_key,
    request_target,
    slack_challenge,
    verify_request,
)
from ingest.http.signatures import SignatureError, verify_signature
from ingest.metrics import Reason
from ingest.ratelimit import RateDecision, TokenBucket, ratelimit_headers
from webapp.context import settings
from webapp.errors import ApiError, error_response
from webapp.observability import note_batch_statuses, note_webhook_reason
from webapp.publisher import (
    QUEUE,
    PublishError,
    app_lock,
    get_publisher,
    publisher_saturated,
)

__all__ = ["bp"]

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__)
_EXTENSION = "ingest.webhooks"
_BATCH_KEY_PREFIX = "batch:"  # request-level keys of the batch endpoint, apart from event keys
POOL_SIZE, POOL_WAIT = 128, 2.0
_REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
T = TypeVar("T")
# What werkzeug derives ``request.base_url`` from (scheme, host, script root, path).
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


@dataclass(frozen=True)
class _Services:
    """The per-process handles the endpoints share: sources, buckets, keys, queue depth.

    ``keys_with_buckets`` says the idempotency keys live in the rate limits' Redis, so one
    script can charge the buckets and claim a key in a single round trip.
    """

    sources: dict[str, WebhookSource]
    buckets: TokenBucket
    keys: IdempotencyStore | None
    backlog: QueueDepthGauge | None
    http: HttpConfig
    keys_with_buckets: bool = False


@bp.record_once
def _check_sources(state: BlueprintSetupState) -> None:
    # A source that could never verify a request stops the start, like any bad config key.
    try:
        config = state.app.extensions["ingest.settings"]
        webhook_sources(config.http, config.schemas_dir)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


@bp.errorhandler(redis.exceptions.ConnectionError)
@bp.errorhandler(redis.exceptions.TimeoutError)
def _redis_down(exc: Exception) -> Response:
    log.warning("webhook request failed, Redis unreachable: %s", exc)
    return error_response(
        503,
        "Redis (rate limits, idempotency keys, broker) is unreachable; retry later",
        {"Retry-After": "5"},
    )


def _services() -> _Services:
    extensions = current_app.extensions
    found = extensions.get(_EXTENSION)
    if found is None or found[0] != os.getpid():
        with app_lock(current_app, _EXTENSION):
            found = extensions.get(_EXTENSION)
            if found is None or found[0] != os.getpid():
                found = extensions[_EXTENSION] = (os.getpid(), _build_services())
    return cast(_Services, found[1])


def _build_services() -> _Services:
    cfg: Settings = settings()
    client = _redis_client(cfg.redis_url)
    keys = None
    same = cfg.idempotency_redis_url == cfg.redis_url
    if cfg.http.idempotency.enabled:
        key_client = client if same else _redis_client(cfg.idempotency_redis_url)
        keys = IdempotencyStore(key_client, ttl_seconds=cfg.http.idempotency.ttl)
    broker = cfg.effective_broker_url
    backlog = None
    if broker.startswith(("redis://", "rediss://", "unix://")):
        broker_client = client if broker == cfg.redis_url else _redis_client(broker)
        backlog = QueueDepthGauge(broker_client, QUEUE, max_age=0.1)
    sources = webhook_sources(cfg.http, cfg.schemas_dir)
    buckets = TokenBucket(client)
    return _Services(sources, buckets, keys, backlog, cfg.http, keys_with_buckets=same)


def _redis_client(url: str) -> redis.Redis:
    # A gevent worker serves up to 1000 requests at once; redis-py's default pool refuses
    # the 101st connection outright. A blocking pool makes a burst queue for a connection
    # instead, and answers 503 (a ConnectionError) only after waiting POOL_WAIT seconds.
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=POOL_WAIT,
        socket_timeout=5,
        socket_connect_timeout=2,
        health_check_interval=30,
    )
    return redis.Redis(connection_pool=pool)


def _source(services: _Services, name: str) -> WebhookSource:
    found = services.sources.get(name)
    if found is None:
        raise ApiError(404, f"unknown webhook source {name!r}: check the URL")
    return found


def _read_request(
    services: _Services, allow_ndjson: bool, src: WebhookSource | None = None
) -> tuple[bytes, MediaKind]:
    """The decoded body and its media kind, or the 415/413/408/400 that refuses it."""
    limit, seconds = services.http.max_body_bytes, services.http.body_timeout
    try:
        gzipped = check_content_encoding(request.headers.get("Content-Encoding"))
        ctype = request.headers.get("Content-Type")
        # issue 20: the media types of the source's provider (form bodies for twilio, slack)
        if src is not None:
            kind = media_kind(src, ctype, allow_ndjson)
        else:
            kind = check_media_type(ctype, allow_ndjson)
        # gunicorn's gevent worker has no deadline for a body: without this a client that
        # sends headers and then stalls would hold its connection and greenlet for good.
        late = BodyTimedOut(f"the request body did not arrive within {seconds:g} s")
        with gevent.Timeout(seconds, late):
            raw = read_body(request.stream.read, request.content_length, limit)
        return decode_body(raw, gzipped, limit), kind
    except BodyTimedOut as exc:
        # The rest of the body may still come: close rather than read it as the next request.
        raise ApiError(exc.status, exc.message, {"Connection": "close"}) from None
    except BodyError as exc:
        raise ApiError(exc.status, exc.message) from None


def _check_backpressure(services: _Services) -> None:
    policy = services.http.backpressure
    if publisher_saturated(current_app):
        note_webhook_reason(Reason.BACKPRESSURE)
        raise ApiError(
            503,
            "this web process has too many events waiting for the broker; retry later",
            {"Retry-After": str(policy.retry_after_seconds)},
        )
    if services.backlog is None:
        return
    if services.backlog.over(policy.high_water_mark):
        note_webhook_reason(Reason.BACKPRESSURE)
        raise ApiError(
            503,
            "too many webhook batches are waiting to be stored; retry later",
            {"Retry-After": str(policy.retry_after_seconds)},
        )


def _headers() -> Mapping[str, str]:
    # Werkzeug's Headers offers what the core's Mapping-based checks use (items, get).
    return cast(Mapping[str, str], request.headers)


def _lowered_headers() -> dict[str, str]:
    """The request's headers by lower-case name, read once from the WSGI environ.

    The signature check and the idempotency key each look names up case-insensitively; a
    plain dict built once serves both for less than werkzeug's ``Headers`` iterated twice.
    WSGI holds one value per name (the server joins repeats), as ``Headers`` does.
    """
    environ = request.environ
    found = {
        name[5:].replace("_", "-").lower(): value
        for name, value in environ.items()
        if name.startswith("HTTP_") and name not in _BODY_HEADERS
    }
    for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):  # as werkzeug: from these, when not empty
        if environ.get(name):
            found[name.replace("_", "-").lower()] = environ[name]
    return found


def _verify(source: WebhookSource, body: bytes, headers: Mapping[str, str] | None = None) -> None:
    try:
        verify_signature(source.signature, _headers() if headers is None else headers, body)
    except SignatureError:
        raise ApiError(401, "signature verification failed") from None


def _deferred(parse: Callable[[], T]) -> tuple[T | None, ApiError | None]:
    # The contract checks rate limits before the body, yet a batch's cost is its event count.
    try:
        return parse(), None
    except BodyError as exc:
        return None, ApiError(exc.status, exc.message)


def _charge(services: _Services, source: WebhookSource, cost: int) -> list[RateDecision]:
    burst = source.smallest_burst()
    if cost > burst:
        raise ApiError(
            413,
            f"a batch of {cost} events exceeds the rate-limit burst of {burst} events of source "
            f"{source.name!r}: split it into batches of at most {burst} events",
        )
    decisions = services.buckets.take_many(list(source.rate_checks), cost)
    if not all(d.allowed for d in decisions):
        raise ApiError(429, "rate limit exceeded; retry later", ratelimit_headers(decisions))
    return decisions


def _entry(
    parsed: ParsedEvent,
    key: str,
    source: WebhookSource,
    epoch: float,
    webhook_timestamp: str | None,
    received_at: str | None = None,
) -> dict[str, Any]:
    """An event as the batch payload carries it (see tasks.webhooks).

    The event travels as its canonical JSON text: kombu's JSON decoder turns objects shaped
    ``{"__type__", "__value__"}`` into Python objects (or refuses the message), so an event
    of that shape sent as an object would be altered, or would poison its whole batch.
    ``received_at`` is ``epoch_to_iso(epoch)`` when the caller has it already (a batch's
    events share it).
    """
    return {
        "eventJson": parsed.canonical,
        "eventId": key,
        "contentHash": parsed.content_hash,
        "receivedAt": epoch_to_iso(epoch) if received_at is None else received_at,
        "receivedAtEpoch": epoch,
        "observedAt": observed_at(parsed.event, source.observed_at_field, webhook_timestamp),
    }


def _batch_fields(source: WebhookSource) -> dict[str, Any]:
    # Purpose and classification travel with the batch, so a later config change or a DLQ
    # replay stores the events under the terms they were accepted with.
    return {
        "source": source.name,
        "sourceUri": _base_url(),
        "purpose": source.purpose,
        "classification": source.classification,
    }


def _base_url() -> str:
    """``request.base_url``, remembered by the environ values it is made of.

    Working it out (host, quoting) costs more than the rest of building a batch entry, and
    a webhook endpoint sees the same few URLs all day. At most ``_BASE_URLS_KEPT`` are kept,
    so Host headers made up by clients cannot grow the table.
    """
    environ = request.environ
    key = tuple(environ.get(name) for name in _BASE_URL_INPUTS)
    found = _base_urls.get(key)
    if found is None:
        found = request.base_url
        if len(_base_urls) < _BASE_URLS_KEPT:
            _base_urls[key] = found
    return found


def _publish(
    services: _Services, source: WebhookSource, entries: list[dict[str, Any]], keys: list[str]
) -> None:
    """Publish ``entries``; on failure release ``keys`` so the client can retry, and 503."""
    complete = services.keys.complete_many if services.keys is not None else None
    try:
        get_publisher(current_app, complete).submit(_batch_fields(source), entries)
    except PublishError as exc:
        if services.keys is not None and keys:
            _release_quietly(services.keys, source, keys)
        raise ApiError(
            503, f"the broker did not take the event; retry later ({exc})", {"Retry-After": "5"}
        ) from None


def _release_quietly(store: IdempotencyStore, source: WebhookSource, keys: list[str]) -> None:
    try:
        store.release_many(source.name, keys)
    except _REDIS_ERRORS:
        log.warning("releasing %d idempotency keys failed; their claims expire", len(keys))


def _answer(status: int, body: dict[str, Any], decisions: Sequence[RateDecision]) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers.update(ratelimit_headers(list(decisions)))
    return response


def _refusal(outcome: ClaimOutcome, key: str) -> ApiError:
    if outcome is ClaimOutcome.IN_FLIGHT:
        return ApiError(
            409,
            "a request with this idempotency key is still being processed; retry shortly",
            {"Retry-After": "1"},
            eventId=key,
        )
    return ApiError(
        422,
        "this idempotency key was already used with a different body; use a new key",
        eventId=key,
    )


@dataclass(frozen=True)
class _Refusal:
    """A 400 found before the rate limits were charged, raised only once they were (the
    contract checks rate limits first), with the metrics reason it carries, if any."""

    error: ApiError
    reason: Reason | None = None

    def raise_it(self) -> NoReturn:
        if self.reason is not None:
            note_webhook_reason(self.reason)
        raise self.error


def _parse_single(
    services: _Services, source: WebhookSource, body: bytes
) -> ParsedEvent | _Refusal:
    """The event of a single-event body, or why it is refused (malformed, fails the schema)."""
    try:
        # issue 20: a form body's event is the JSON object of its fields
        ctype = request.headers.get("Content-Type")
        parsed = decode_event(source, ctype, body, services.http.max_json_depth)
    except BodyError as exc:
        return _Refusal(ApiError(exc.status, exc.message))
    if source.event_schema is not None:
        problem = source.event_schema.problem(parsed.event)
        if problem is not None:
            return _Refusal(ApiError(400, problem), Reason.INVALID_EVENT)
    return parsed


def _charge_and_claim(
    services: _Services, source: WebhookSource, key: str, content_hash: str
) -> tuple[list[RateDecision], Claim | None]:
    """Charge one token (429 when refused) and claim ``key``; the claim is None when
    idempotency is off. One Redis round trip when the keys live beside the buckets."""
    store = services.keys
    if store is None or not services.keys_with_buckets:
        decisions = _charge(services, source, 1)
        return decisions, None if store is None else store.begin(source.name, key, content_hash)
    buckets, checks = services.buckets, source.rate_checks
    decisions, claim = store.take_and_begin(buckets, checks, source.name, key, content_hash)
    if claim is None:
        raise ApiError(429, "rate limit exceeded; retry later", ratelimit_headers(decisions))
    return decisions, claim


@bp.post("/v1/webhooks/<source>")
def receive_event(source: str) -> Response:
    """Accept one JSON event: 202 once it is published, 200 when its key was already accepted."""
    services = _services()
    src = _source(services, source)
    body, _ = _read_request(services, allow_ndjson=False, src=src)
    _check_backpressure(services)
    headers = _lowered_headers()
    # issue 20: every scheme of the presets; Twilio signs publicUrl + the path and query as sent
    try:
        verify_request(src, headers, body, request_target(request.environ))
    except SignatureError:
        raise ApiError(401, "signature verification failed") from None
    epoch = time.time()
    parsed = _parse_single(services, src, body)
    if isinstance(parsed, _Refusal):
        _charge(services, src, 1)
        parsed.raise_it()
    # issue 20: Slack's url_verification handshake, answered (not stored) once verified
    challenge = slack_challenge(src, parsed.event)
    if challenge is not None:
        return _answer(200, challenge, _charge(services, src, 1))
    # issue 20: the provider's delivery or event id comes before the contract's fallbacks
    key = provider_key(src, headers, parsed.event) or idempotency_key(
        headers, parsed.event, src.id_field, parsed.content_hash
    )
    decisions, claim = _charge_and_claim(services, src, key, parsed.content_hash)
    result = {"eventId": key, "contentHash": parsed.content_hash}
    if claim is not None:
        if claim.outcome is ClaimOutcome.DUPLICATE:
            answer = {"status": "duplicate", **result, **(claim.result or {})}
            return _answer(200, answer, decisions)
        if claim.outcome is not ClaimOutcome.NEW:
            raise _refusal(claim.outcome, key)
    entry = _entry(parsed, key, src, epoch, headers.get("webhook-timestamp"))
    # issue 20: observedAt where the provider puts it (event field, a header of its own)
    entry["observedAt"] = event_observed_at(src, headers, parsed.event)
    _publish(services, src, [entry], [key])
    return _answer(202, {"status": "accepted", **result}, decisions)


def _check_schema(source: WebhookSource, events: Sequence[ParsedEvent]) -> None:
    """400 when an event fails its source's schema; a batch is refused whole, naming the event."""
    if source.event_schema is None:
        return
    for index, parsed in enumerate(events):
        problem = source.event_schema.problem(parsed.event)
        if problem is not None:
            note_webhook_reason(Reason.INVALID_EVENT)
            where = f"event {index}: " if len(events) > 1 else ""
            raise ApiError(400, where + problem)


def _request_key() -> str | None:
    for name in ("Idempotency-Key", "webhook-id"):
        value = (request.headers.get(name) or "").strip()
        if value:
            return value
    return None


@bp.post("/v1/webhooks/<source>/batch")
def receive_batch(source: str) -> Response:
    """Accept NDJSON or a JSON array of events: 202 with one result per event, in order.

    A request-level key (``Idempotency-Key`` or ``webhook-id``) names the whole request: its
    retry is answered 200 with the results the first answer gave. The answer is 202 whenever
    the batch was processed now, even when every event in it turned out to be a duplicate.
    """
    services = _services()
    src = _source(services, source)
    body, kind = _read_request(services, allow_ndjson=True)
    _check_backpressure(services)
    _verify(src, body)
    epoch = time.time()
    cfg = services.http
    events, error = _deferred(
        lambda: parse_batch(body, kind, cfg.max_json_depth, cfg.max_batch_events)
    )
    decisions = _charge(services, src, len(events) if events else 1)
    if events is None:
        raise error or ApiError(400, "the body is not a batch of JSON events")
    _check_schema(src, events)
    request_key = _request_key() if services.keys is not None else None
    batch_hash = hashlib.sha256("\n".join(e.content_hash for e in events).encode()).hexdigest()
    if request_key is not None and services.keys is not None:
        claim = services.keys.begin(src.name, _BATCH_KEY_PREFIX + request_key, batch_hash)
        if claim.outcome is ClaimOutcome.DUPLICATE:
            stored = (claim.result or {}).get("results", [])
            if isinstance(stored, list):
                note_batch_statuses({}, duplicates=len(stored))
            return _answer(200, {"status": "duplicate", "results": stored}, decisions)
        if claim.outcome is not ClaimOutcome.NEW:
            raise _refusal(claim.outcome, request_key)
    try:
        results = _store_batch(services, src, events, epoch, request_key)
    except _REDIS_ERRORS:
        # Free the request key at once if Redis allows, so a retry is not refused for a minute.
        if request_key is not None and services.keys is not None:
            _release_quietly(services.keys, src, [_BATCH_KEY_PREFIX + request_key])
        raise
    if request_key is not None and services.keys is not None:
        _complete_request(services.keys, src, request_key, batch_hash, results)
    note_batch_statuses(Counter(r["status"] for r in results))
    return _answer(202, {"status": "accepted", "results": results}, decisions)


def _store_batch(
    services: _Services,
    source: WebhookSource,
    events: list[ParsedEvent],
    epoch: float,
    request_key: str | None,
) -> list[dict[str, Any]]:
    """Claim each event's key, publish the accepted ones and return the per-event results."""
    keys = [event_key(e.event, source.id_field, e.content_hash) for e in events]
    hashes = [e.content_hash for e in events]
    store = services.keys

    def claim(pairs: list[tuple[str, str]]) -> list[ClaimOutcome]:
        if store is None:
            return [ClaimOutcome.NEW] * len(pairs)
        return [c.outcome for c in store.begin_many(source.name, pairs)]

    statuses = batch_statuses(keys, hashes, claim)
    accepted = [i for i, status in enumerate(statuses) if status == "accepted"]
    stamp = request.headers.get("webhook-timestamp")
    received_at = epoch_to_iso(epoch)  # one request, one receipt time
    entries = [_entry(events[i], keys[i], source, epoch, stamp, received_at) for i in accepted]
    release = [keys[i] for i in accepted]
    if request_key is not None:
        release.append(_BATCH_KEY_PREFIX + request_key)
    _publish(services, source, entries, release)
    return [
        {"index": i, "status": status, "eventId": keys[i], "contentHash": hashes[i]}
        for i, status in enumerate(statuses)
    ]


def _complete_request(
    store: IdempotencyStore,
    source: WebhookSource,
    request_key: str,
    batch_hash: str,
    results: list[dict[str, Any]],
) -> None:
    try:
        key = _BATCH_KEY_PREFIX + request_key
        store.complete(source.name, key, batch_hash, {"results": results})
    except _REDIS_ERRORS as exc:
        # The events are published: still 202. The request key's claim expires instead.
        log.warning("completing batch key failed: %s", exc)
