"""The batch endpoint, ``POST /v1/webhooks/<source>/batch``: many events, one result each.

Checks run in the contract's order, as for a single event (see :mod:`webapp.webhooks`). Every
event is claimed by its key (the source's event field, else its canonical hash) and appended
to its source's stream in one script call (``EventStreams.accept_batch``), the accepted events
as one stream entry: a batch of 1,000 costs one round trip and one append, not 1,000.

A request-level key (``Idempotency-Key`` or ``webhook-id``) names the whole request. What it
remembers is compact: the content of the batch (its hash) and one status letter per event.
A retry is answered 200 with the same results, rebuilt from the retried request itself: its
events are the same (the hash says so), so their keys and content hashes are too.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring_ascii
from typing import Any

from flask import Response

from ingest.observability.tracing import traceparent
from ingest.ratelimit import RateDecision, ratelimit_headers
from ingest.webhooks.bodies import BodyError, ParsedEvent, parse_batch
from ingest.webhooks.idempotency import ClaimOutcome, IdempotencyStore, event_key
from ingest.webhooks.intake import WebhookSource, batch_statuses, observed_at
from ingest.webhooks.stream import batch_entry_shared
from webapp.errors import ApiError
from webapp.observability import note_batch_statuses
from webapp.webhooks import (
    REDIS_ERRORS,
    Services,
    backpressure,
    base_url,
    charge,
    check_schema,
    conflict,
    lowered_headers,
    read_request,
    refusal,
    release_quietly,
    source_of,
    verify,
)

__all__ = ["receive", "results_json"]

log = logging.getLogger(__name__)
BATCH_KEY_PREFIX = "batch:"  # request-level keys of the batch endpoint, apart from event keys
# One letter per event status, as a request-level key remembers them.
_LETTER = {"accepted": "a", "duplicate": "d", "in_flight": "f", "conflict": "c"}
_STATUS = {letter: status for status, letter in _LETTER.items()}


def receive(services: Services, name: str, environ: Mapping[str, Any]) -> Response:
    """Decide one batch request: 202 with each event's result, in order."""
    src = source_of(services, name)
    body, kind = read_request(services, environ, allow_ndjson=True)
    headers = lowered_headers(environ)
    verify(src, body, headers)
    epoch = time.time()
    cfg = services.http
    try:
        events: list[ParsedEvent] | None = parse_batch(
            body, kind, cfg.max_json_depth, cfg.max_batch_events
        )
        error = None
    except BodyError as exc:  # the contract checks rate limits before the body
        events, error = None, refusal(exc.status, exc.message)
    decisions = charge(services, src, len(events) if events else 1)
    if events is None:
        raise error or refusal(400, "the body is not a batch of JSON events")
    check_schema(src, events)
    keys = [event_key(e.event, src.id_field, e.content_hash) for e in events]
    hashes = [e.content_hash for e in events]
    store = services.keys
    request_key = _request_key(headers) if store is not None else None
    batch_hash = hashlib.sha256("\n".join(hashes).encode()).hexdigest()
    if request_key is not None and store is not None:
        claim = store.begin(src.name, BATCH_KEY_PREFIX + request_key, batch_hash)
        if claim.outcome is ClaimOutcome.DUPLICATE:
            statuses = _remembered_statuses(claim.result, len(events))
            note_batch_statuses({}, duplicates=len(statuses))
            return _answer(200, "duplicate", keys, hashes, statuses, decisions)
        if claim.outcome is not ClaimOutcome.NEW:
            raise conflict(claim.outcome, request_key)
    try:
        statuses = _append(services, src, events, keys, epoch, headers, base_url(environ))
    except (ApiError, *REDIS_ERRORS):
        # Free the request key at once if Redis allows, so a retry is not refused for a minute.
        if request_key is not None and store is not None:
            release_quietly(store, src, [BATCH_KEY_PREFIX + request_key])
        raise
    if request_key is not None and store is not None:
        _complete_request(store, src, request_key, batch_hash, statuses)
    note_batch_statuses(Counter(statuses))
    return _answer(202, "accepted", keys, hashes, statuses, decisions)


def _request_key(headers: Mapping[str, str]) -> str | None:
    for name in ("idempotency-key", "webhook-id"):
        value = (headers.get(name) or "").strip()
        if value:
            return value
    return None


def _append(
    services: Services,
    source: WebhookSource,
    events: list[ParsedEvent],
    keys: list[str],
    epoch: float,
    headers: Mapping[str, str],
    uri: str,
) -> list[str]:
    """Claim each event's key and append the accepted ones; return each event's status."""
    hashes = [e.content_hash for e in events]
    stamp = headers.get("webhook-timestamp")
    observed_field = source.observed_at_field
    stamped = observed_at({}, None, stamp)  # every event's, unless it carries its own field
    items = {
        k: (
            e.canonical,
            k,
            observed_at(e.event, observed_field, stamp) if observed_field else stamped,
        )
        for e, k in reversed(list(zip(events, keys, strict=True)))  # first occurrence wins
    }
    shared = batch_entry_shared(epoch, uri, source.purpose, source.classification, traceparent())
    store = services.keys

    def claim(pairs: list[tuple[str, str]]) -> list[ClaimOutcome]:
        if store is not None and not services.keys_with_buckets:
            return _claim_apart(services, store, source, pairs, shared, items)
        use_keys = store is not None
        batch = [(k if use_keys else None, h, *items[k]) for k, h in pairs]
        outcomes = services.streams.accept_batch(source.name, shared, batch)
        if not isinstance(outcomes, list):
            raise backpressure(services, outcomes)
        return outcomes

    return batch_statuses(keys, hashes, claim)


def _claim_apart(
    services: Services,
    store: IdempotencyStore,
    source: WebhookSource,
    pairs: list[tuple[str, str]],
    shared: list[str],
    items: Mapping[str, tuple[str, str, str | None]],
) -> list[ClaimOutcome]:
    """Batch claims when the keys live in a Redis of their own: claim, append, complete."""
    outcomes = [c.outcome for c in store.begin_many(source.name, pairs)]
    new = [(k, h) for (k, h), o in zip(pairs, outcomes, strict=True) if o is ClaimOutcome.NEW]
    if not new:
        return outcomes
    try:
        appended = services.streams.accept_batch(
            source.name, shared, [(None, h, *items[k]) for k, h in new]
        )
    except REDIS_ERRORS:
        release_quietly(store, source, [k for k, _ in new])
        raise
    if not isinstance(appended, list):
        release_quietly(store, source, [k for k, _ in new])
        raise backpressure(services, appended)
    store.complete_many(source.name, [(k, h, {}) for k, h in new])
    return outcomes


def _complete_request(
    store: IdempotencyStore,
    source: WebhookSource,
    request_key: str,
    batch_hash: str,
    statuses: list[str],
) -> None:
    try:
        letters = "".join(_LETTER[s] for s in statuses)
        store.complete(source.name, BATCH_KEY_PREFIX + request_key, batch_hash, {"s": letters})
    except REDIS_ERRORS as exc:
        # The events are durable: still 202. The request key's claim expires instead.
        log.warning("completing batch key failed: %s", exc)


def _remembered_statuses(result: Mapping[str, Any] | None, events: int) -> list[str]:
    """The statuses a request key remembered: one letter each (``{"s": "aad"}``), or whole
    results as earlier versions kept them (``{"results": [...]}``)."""
    result = result or {}
    letters = result.get("s")
    if isinstance(letters, str) and len(letters) == events:
        return [_STATUS.get(letter, "accepted") for letter in letters]
    kept = result.get("results")
    if isinstance(kept, list) and len(kept) == events:
        return [str(r.get("status", "accepted")) if isinstance(r, dict) else "" for r in kept]
    # A key completed with nothing to say (or a different count): the events were accepted.
    return ["duplicate"] * events


def results_json(keys: Sequence[str], hashes: Sequence[str], statuses: Sequence[str]) -> str:
    """The ``results`` array as ``jsonify`` would write it (keys sorted, ASCII, compact),
    without a dict per event: a 1,000-event answer is most of a batch request's JSON work."""
    return (
        "["
        + ",".join(
            f'{{"contentHash":{encode_basestring_ascii(h)},"eventId":{encode_basestring_ascii(k)},'
            f'"index":{i},"status":"{s}"}}'
            for i, (k, h, s) in enumerate(zip(keys, hashes, statuses, strict=True))
        )
        + "]"
    )


def _answer(
    code: int,
    status: str,
    keys: Sequence[str],
    hashes: Sequence[str],
    statuses: Sequence[str],
    decisions: Sequence[RateDecision],
) -> Response:
    text = f'{{"results":{results_json(keys, hashes, statuses)},"status":"{status}"}}\n'
    response = Response(text, status=code, mimetype="application/json")
    response.headers.update(ratelimit_headers(list(decisions)))
    return response
