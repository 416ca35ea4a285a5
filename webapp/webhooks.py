"""The webhook endpoints: verified, rate-limited, idempotent events, answered 202 once durable.

Checks run in the order of the contract: source (404), encoding and media type (415), size
(413), signature (401), rate limits (429, or 413 for a batch no bucket could ever pay), body
(400), idempotency (200/409/422); backpressure (503) is decided in the same Redis step as the
rate limits. An accepted event is in its source's stream (``ingest.webhooks.stream``) before
the 202 is sent: one Redis round trip per single event, and no request waits for a batch.

The single-event endpoint is served by :mod:`webapp.fastpath` in front of Flask (the same
:func:`receive_single`, without Flask's request machinery); the Flask route below serves it
where the fast path steps aside (tracing on).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import redis
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.blueprints import BlueprintSetupState

from ingest.config import ConfigError, HttpConfig, Settings
from ingest.observability.metrics import Reason
from ingest.observability.tracing import traceparent
from ingest.ratelimit import RateDecision, TokenBucket, ratelimit_headers
from ingest.webhooks.bodies import (
    BodyError,
    ParsedEvent,
)
from ingest.webhooks.idempotency import ClaimOutcome, IdempotencyStore, idempotency_key
from ingest.webhooks.intake import WebhookSource, webhook_sources
from ingest.webhooks.providers import (
    decode_event,
    event_observed_at,
    provider_key,
    request_target,
    slack_challenge,
    verify_request,
)
from ingest.webhooks.signatures import SignatureError, verify_signature
from ingest.webhooks.stream import EventStreams, Refused, entry_fields
from webapp.errors import ApiError, error_response
from webapp.observability import note_webhook_reason
from webapp.webhook_requests import base_url, lowered_headers, read_request, refusal

__all__ = ["Answer", "Services", "bp", "receive_single", "services_for"]

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__)
_EXTENSION = "ingest.webhooks"
POOL_SIZE, POOL_WAIT = 128, 2.0
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
REDIS_DOWN = "Redis (rate limits, idempotency keys, event streams) is unreachable; retry later"
T = TypeVar("T")
_services_lock = threading.Lock()


@dataclass(frozen=True)
class Services:
    """The per-process handles the endpoints share: sources, buckets, keys and streams.

    ``keys_with_buckets`` says the idempotency keys live in the rate limits' Redis, so one
    script charges the buckets, claims the key and appends the event in a single round trip.
    """

    sources: dict[str, WebhookSource]
    buckets: TokenBucket
    keys: IdempotencyStore | None
    streams: EventStreams
    http: HttpConfig
    keys_with_buckets: bool = False


@dataclass
class Answer:
    """A webhook answer, for whichever front serves it."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    reason: Reason | None = None


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
    return error_response(503, REDIS_DOWN, {"Retry-After": "5"})


def services_for(app: Flask) -> Services:
    """This process's services for ``app``, built on first use (after any fork)."""
    extensions = app.extensions
    found = extensions.get(_EXTENSION)
    if found is None or found[0] != os.getpid():
        with _services_lock:
            found = extensions.get(_EXTENSION)
            if found is None or found[0] != os.getpid():
                found = extensions[_EXTENSION] = (os.getpid(), _build_services(app))
    return cast(Services, found[1])


def _build_services(app: Flask) -> Services:
    cfg: Settings = app.extensions["ingest.settings"]
    client = _redis_client(cfg.redis_url)
    keys = None
    same = cfg.idempotency_redis_url == cfg.redis_url
    if cfg.http.idempotency.enabled:
        key_client = client if same else _redis_client(cfg.idempotency_redis_url)
        keys = IdempotencyStore(key_client, ttl_seconds=cfg.http.idempotency.ttl)
    buckets = TokenBucket(client)
    streams = EventStreams(
        client, buckets, keys if same else None, cfg.http.backpressure.high_water_mark
    )
    sources = webhook_sources(cfg.http, cfg.schemas_dir)
    return Services(sources, buckets, keys, streams, cfg.http, keys_with_buckets=same)


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


def source_of(services: Services, name: str) -> WebhookSource:
    found = services.sources.get(name)
    if found is None:
        raise refusal(404, f"unknown webhook source {name!r}: check the URL")
    return found


def verify(source: WebhookSource, body: bytes, headers: Mapping[str, str]) -> None:
    try:
        verify_signature(source.signature, headers, body)
    except SignatureError:
        raise refusal(401, "signature verification failed") from None


def charge(services: Services, source: WebhookSource, cost: int) -> list[RateDecision]:
    """Take ``cost`` tokens from the source's buckets: 429 when refused, 413 when never payable."""
    burst = source.smallest_burst()
    if cost > burst:
        raise refusal(
            413,
            f"a batch of {cost} events exceeds the rate-limit burst of {burst} events of source "
            f"{source.name!r}: split it into batches of at most {burst} events",
        )
    decisions = services.buckets.take_many(list(source.rate_checks), cost)
    if not all(d.allowed for d in decisions):
        raise refusal(429, "rate limit exceeded; retry later", ratelimit_headers(decisions))
    return decisions


def backpressure(services: Services, refused: Refused) -> ApiError:
    policy = services.http.backpressure
    return refusal(
        503,
        f"{refused.length} accepted events of this source are waiting to be stored; retry later",
        {"Retry-After": str(policy.retry_after_seconds)},
        Reason.BACKPRESSURE,
    )


def conflict(outcome: ClaimOutcome, key: str) -> ApiError:
    if outcome is ClaimOutcome.IN_FLIGHT:
        return refusal(
            409,
            "a request with this idempotency key is still being processed; retry shortly",
            {"Retry-After": "1"},
            eventId=key,
        )
    return refusal(
        422,
        "this idempotency key was already used with a different body; use a new key",
        eventId=key,
    )


def entry_fields_of(
    parsed: ParsedEvent,
    key: str,
    source: WebhookSource,
    epoch: float,
    observed: str | None,
    uri: str,
) -> list[str]:
    return entry_fields(
        parsed.canonical,
        key,
        parsed.content_hash,
        epoch,
        observed,
        uri,
        source.purpose,
        source.classification,
        traceparent(),
    )


def receive_single(services: Services, name: str, environ: Mapping[str, Any]) -> Answer:
    """Decide one single-event request: 202 once its event is in the stream, 200 for a key
    already accepted; raises :class:`ApiError` for every refusal."""
    source = source_of(services, name)
    body, _ = read_request(services, environ, allow_ndjson=False, source=source)
    headers = lowered_headers(environ)
    try:
        # Every scheme of the presets; Twilio signs publicUrl + the path and query as sent.
        verify_request(source, headers, body, request_target(environ))
    except SignatureError:
        raise refusal(401, "signature verification failed") from None
    epoch = time.time()
    try:
        # A form body's event is the JSON object of its fields.
        ctype = environ.get("CONTENT_TYPE")
        parsed = decode_event(source, ctype, body, services.http.max_json_depth)
        problem = None if source.event_schema is None else source.event_schema.problem(parsed.event)
    except BodyError as exc:
        charge(services, source, 1)  # the contract checks rate limits before the body
        raise refusal(exc.status, exc.message) from None
    if problem is not None:
        charge(services, source, 1)
        raise refusal(400, problem, reason=Reason.INVALID_EVENT)
    challenge = slack_challenge(source, parsed.event)
    if challenge is not None:  # Slack's url_verification handshake: answered, not stored
        return Answer(200, challenge, ratelimit_headers(charge(services, source, 1)))
    # The provider's delivery or event id comes before the contract's fallbacks.
    key = provider_key(source, headers, parsed.event) or idempotency_key(
        headers, parsed.event, source.id_field, parsed.content_hash
    )
    observed = event_observed_at(source, headers, parsed.event)
    fields = entry_fields_of(parsed, key, source, epoch, observed, base_url(environ))
    result = {"eventId": key, "contentHash": parsed.content_hash}
    if services.keys is not None and not services.keys_with_buckets:
        return _receive_apart(services, source, key, parsed.content_hash, fields, result)
    use_key = key if services.keys is not None else None
    accepted = services.streams.accept_one(
        source.name, source.rate_checks, use_key, parsed.content_hash, fields
    )
    if isinstance(accepted, Refused):
        raise backpressure(services, accepted)
    decisions, claim = accepted.decisions, accepted.claim
    if claim is None:
        raise refusal(429, "rate limit exceeded; retry later", ratelimit_headers(decisions))
    if claim.outcome is ClaimOutcome.DUPLICATE:
        answer = {"status": "duplicate", **result, **(claim.result or {})}
        return Answer(200, answer, ratelimit_headers(decisions))
    if claim.outcome is not ClaimOutcome.NEW:
        raise conflict(claim.outcome, key)
    return Answer(202, {"status": "accepted", **result}, ratelimit_headers(decisions))


def _receive_apart(
    services: Services,
    source: WebhookSource,
    key: str,
    content_hash: str,
    fields: list[str],
    result: dict[str, str],
) -> Answer:
    """:func:`receive_single` when the keys live in a Redis of their own: charge, claim in
    flight, append, complete (four round trips instead of one)."""
    store = cast(IdempotencyStore, services.keys)
    decisions = charge(services, source, 1)
    claim = store.begin(source.name, key, content_hash)
    if claim.outcome is ClaimOutcome.DUPLICATE:
        answer = {"status": "duplicate", **result, **(claim.result or {})}
        return Answer(200, answer, ratelimit_headers(decisions))
    if claim.outcome is not ClaimOutcome.NEW:
        raise conflict(claim.outcome, key)
    try:
        appended = services.streams.accept_one(source.name, (), None, content_hash, fields)
    except REDIS_ERRORS:
        release_quietly(store, source, [key])
        raise
    if isinstance(appended, Refused):
        release_quietly(store, source, [key])
        raise backpressure(services, appended)
    store.complete(source.name, key, content_hash, {})
    return Answer(202, {"status": "accepted", **result}, ratelimit_headers(decisions))


def release_quietly(store: IdempotencyStore, source: WebhookSource, keys: list[str]) -> None:
    try:
        store.release_many(source.name, keys)
    except REDIS_ERRORS:
        log.warning("releasing %d idempotency keys failed; their claims expire", len(keys))


def _respond(answer: Answer) -> Response:
    if answer.reason is not None:
        note_webhook_reason(answer.reason)
    response = jsonify(answer.body)
    response.status_code = answer.status
    response.headers.update(answer.headers)
    return response


def _refused(call: Callable[[], T]) -> T:
    """Run ``call``; an error it raises counts under its metrics reason (Flask routes)."""
    try:
        return call()
    except ApiError as exc:
        reason = getattr(exc, "reason", None)
        if reason is not None:
            note_webhook_reason(reason)
        raise


@bp.post("/v1/webhooks/<source>")
def receive_event(source: str) -> Response:
    """Accept one JSON event: 202 once it is durable, 200 when its key was already accepted."""
    services = services_for(current_app)
    return _respond(_refused(lambda: receive_single(services, source, request.environ)))


def check_schema(source: WebhookSource, events: Sequence[ParsedEvent]) -> None:
    """400 when an event fails its source's schema; a batch is refused whole, naming the event."""
    if source.event_schema is None:
        return
    for index, parsed in enumerate(events):
        problem = source.event_schema.problem(parsed.event)
        if problem is not None:
            where = f"event {index}: " if len(events) > 1 else ""
            raise refusal(400, where + problem, reason=Reason.INVALID_EVENT)


@bp.post("/v1/webhooks/<source>/batch")
def receive_batch(source: str) -> Response:
    """Accept NDJSON or a JSON array of events: 202 with one result per event, in order.

    A request-level key (``Idempotency-Key`` or ``webhook-id``) names the whole request: its
    retry is answered 200 with the results the first answer gave. The answer is 202 whenever
    the batch was processed now, even when every event in it turned out to be a duplicate.
    """
    from webapp.webhook_batch import receive  # it builds on this module

    services = services_for(current_app)
    return _refused(lambda: receive(services, source, request.environ))
