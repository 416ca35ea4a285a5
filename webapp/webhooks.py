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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import redis
from flask import Blueprint, Response, current_app, jsonify, request
from flask.blueprints import BlueprintSetupState

from ingest.config import ConfigError, Settings
from ingest.http.backpressure import QueueDepthGauge
from ingest.http.bodies import (
    BodyError,
    MediaKind,
    ParsedEvent,
    check_content_encoding,
    check_media_type,
    decode_body,
    parse_batch,
    parse_event,
    read_body,
)
from ingest.http.idempotency import ClaimOutcome, IdempotencyStore, idempotency_key
from ingest.http.intake import (
    WebhookSource,
    batch_statuses,
    epoch_to_iso,
    observed_at,
    webhook_sources,
)
from ingest.http.signatures import SignatureError, verify_signature
from ingest.metrics import Reason
from ingest.ratelimit import RateDecision, TokenBucket, ratelimit_headers
from webapp.context import settings
from webapp.errors import ApiError, error_response
from webapp.observability import note_webhook_reason
from webapp.publisher import QUEUE, PublishError, app_lock, get_publisher

__all__ = ["bp"]

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__)
_EXTENSION = "ingest.webhooks"
_BATCH_KEY_PREFIX = "batch:"  # request-level keys of the batch endpoint, apart from event keys
POOL_SIZE, POOL_WAIT = 128, 2.0
_REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
T = TypeVar("T")


@dataclass(frozen=True)
class _Services:
    """The per-process handles the endpoints share: sources, buckets, keys, queue depth."""

    sources: dict[str, WebhookSource]
    buckets: TokenBucket
    keys: IdempotencyStore | None
    backlog: QueueDepthGauge | None


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
    if cfg.http.idempotency.enabled:
        same = cfg.idempotency_redis_url == cfg.redis_url
        key_client = client if same else _redis_client(cfg.idempotency_redis_url)
        keys = IdempotencyStore(key_client, ttl_seconds=cfg.http.idempotency.ttl)
    broker = cfg.effective_broker_url
    backlog = None
    if broker.startswith(("redis://", "rediss://", "unix://")):
        broker_client = client if broker == cfg.redis_url else _redis_client(broker)
        backlog = QueueDepthGauge(broker_client, QUEUE, max_age=0.1)
    sources = webhook_sources(cfg.http, cfg.schemas_dir)
    return _Services(sources, TokenBucket(client), keys, backlog)


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


def _read_request(allow_ndjson: bool) -> tuple[bytes, MediaKind]:
    """The decoded body and its media kind, or the 415/413/400 that refuses it."""
    limit = settings().http.max_body_bytes
    try:
        gzipped = check_content_encoding(request.headers.get("Content-Encoding"))
        kind = check_media_type(request.headers.get("Content-Type"), allow_ndjson)
        raw = read_body(request.stream.read, request.content_length, limit)
        return decode_body(raw, gzipped, limit), kind
    except BodyError as exc:
        raise ApiError(exc.status, exc.message) from None


def _check_backpressure(services: _Services) -> None:
    if services.backlog is None:
        return
    policy = settings().http.backpressure
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


def _verify(source: WebhookSource, body: bytes) -> None:
    try:
        verify_signature(source.signature, _headers(), body)
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


def _entry(parsed: ParsedEvent, key: str, source: WebhookSource, epoch: float) -> dict[str, Any]:
    """An event as the batch payload carries it (see tasks.webhooks).

    The event travels as its canonical JSON text: kombu's JSON decoder turns objects shaped
    ``{"__type__", "__value__"}`` into Python objects (or refuses the message), so an event
    of that shape sent as an object would be altered, or would poison its whole batch.
    """
    return {
        "eventJson": parsed.canonical,
        "eventId": key,
        "contentHash": parsed.content_hash,
        "receivedAt": epoch_to_iso(epoch),
        "receivedAtEpoch": epoch,
        "observedAt": observed_at(
            parsed.event, source.observed_at_field, request.headers.get("webhook-timestamp")
        ),
    }


def _batch_fields(source: WebhookSource) -> dict[str, Any]:
    # Purpose and classification travel with the batch, so a later config change or a DLQ
    # replay stores the events under the terms they were accepted with.
    return {
        "source": source.name,
        "sourceUri": request.base_url,
        "purpose": source.purpose,
        "classification": source.classification,
    }


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


@bp.post("/v1/webhooks/<source>")
def receive_event(source: str) -> Response:
    """Accept one JSON event: 202 once it is published, 200 when its key was already accepted."""
    services = _services()
    src = _source(services, source)
    body, _ = _read_request(allow_ndjson=False)
    _check_backpressure(services)
    _verify(src, body)
    epoch = time.time()
    cfg = settings().http
    parsed, error = _deferred(lambda: parse_event(body, cfg.max_json_depth))
    decisions = _charge(services, src, 1)
    if parsed is None:
        raise error or ApiError(400, "the body is not a JSON event")
    _check_schema(src, [parsed])
    key = idempotency_key(_headers(), parsed.event, src.id_field, parsed.content_hash)
    result = {"eventId": key, "contentHash": parsed.content_hash}
    if services.keys is not None:
        claim = services.keys.begin(src.name, key, parsed.content_hash)
        if claim.outcome is ClaimOutcome.DUPLICATE:
            answer = {"status": "duplicate", **result, **(claim.result or {})}
            return _answer(200, answer, decisions)
        if claim.outcome is not ClaimOutcome.NEW:
            raise _refusal(claim.outcome, key)
    _publish(services, src, [_entry(parsed, key, src, epoch)], [key])
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
    body, kind = _read_request(allow_ndjson=True)
    _check_backpressure(services)
    _verify(src, body)
    epoch = time.time()
    cfg = settings().http
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
    return _answer(202, {"status": "accepted", "results": results}, decisions)


def _store_batch(
    services: _Services,
    source: WebhookSource,
    events: list[ParsedEvent],
    epoch: float,
    request_key: str | None,
) -> list[dict[str, Any]]:
    """Claim each event's key, publish the accepted ones and return the per-event results."""
    keys = [idempotency_key({}, e.event, source.id_field, e.content_hash) for e in events]
    hashes = [e.content_hash for e in events]
    store = services.keys

    def claim(pairs: list[tuple[str, str]]) -> list[ClaimOutcome]:
        if store is None:
            return [ClaimOutcome.NEW] * len(pairs)
        return [c.outcome for c in store.begin_many(source.name, pairs)]

    statuses = batch_statuses(keys, hashes, claim)
    accepted = [i for i, status in enumerate(statuses) if status == "accepted"]
    entries = [_entry(events[i], keys[i], source, epoch) for i in accepted]
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
