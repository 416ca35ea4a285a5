"""The webhook tasks: drain the sources' streams into the sink, and store a replayed batch.

``ingest.webhooks.drain`` reads a source's accepted events through the streams' consumer group
and stores them in batches (the core is ``ingest.webhooks.drain``). Drains are started by the
dispatcher thread that every worker's main process runs (``tasks.dispatch``).

``ingest.webhooks.store_batch`` stores one batch payload. A drain dead-letters a batch as a
call of this task, so ``ingest dlq retry`` sends the same batch (same id, same file name)
through it again. Delivery is at least once (``acks_late``); storing is idempotent per batch
id, so a redelivered message stores nothing twice.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter
from typing import Any

import redis
from celery import shared_task

from ingest.dedup import DedupIndex
from ingest.dlq import task_entry, webhook_source
from ingest.observability import metrics
from ingest.observability.tracing import batch_span, context_from
from ingest.runtime import Runtime
from ingest.webhooks.drain import StreamDrainer
from ingest.webhooks.storage import store_event_batch
from tasks.base import IngestTask, runtime
from tasks.names import QUEUE_WEBHOOKS, WEBHOOK_DRAIN, WEBHOOK_STORE_BATCH

__all__ = ["DRAIN_TASK", "QUEUE", "TASK_NAME", "drain", "store_batch", "store_now"]

log = logging.getLogger(__name__)

TASK_NAME = WEBHOOK_STORE_BATCH
DRAIN_TASK = WEBHOOK_DRAIN
QUEUE = QUEUE_WEBHOOKS
_DLQ_RETRY_SECONDS = 60
# Fixed for good: changing it would split a source's existing dedup marks.
_DEDUP_PARTITIONS = 4
_dedup_cache: tuple[Runtime, DedupIndex] | None = None
_drainer_cache: tuple[Runtime, StreamDrainer] | None = None


def _dedup_index(rt: Runtime) -> DedupIndex:
    """Content dedup of webhooks, spanning the idempotency TTL (``http.idempotency.ttl``).

    Webhook identities arrive continuously, so their window follows the webhook keys'
    lifetime rather than the S3 import's much longer one. Batches are small (tens of events)
    and each partition they touch costs round trips, so a source's marks use 4 partitions.
    """
    global _dedup_cache
    cached = _dedup_cache
    if cached is None or cached[0] is not rt:
        ttl = max(60, rt.settings.http.idempotency.ttl)
        index = DedupIndex(rt.redis, ttl_seconds=ttl, partitions=_DEDUP_PARTITIONS)
        cached = _dedup_cache = (rt, index)
    return cached[1]


def _source_terms(rt: Runtime, source: str) -> tuple[str, str | None]:
    """Purpose and classification from this worker's config, for payloads that lack them."""
    cfg = rt.settings.http.sources.get(source)
    return (cfg.purpose, cfg.classification) if cfg is not None else ("webhook", None)


# ignore_result: hundreds of batches a second would otherwise each leave a result key in
# Redis for a day; the summary still shows in the worker log and in Flower.
@shared_task(
    bind=True,
    base=IngestTask,
    name=TASK_NAME,
    acks_late=True,
    max_retries=None,
    ignore_result=True,
)
def store_batch(self: IngestTask, payload: dict[str, Any]) -> dict[str, Any]:
    """Store one batch of webhook events; returns ``{"batchId", "stored", "duplicates", ...}``."""
    rt = runtime()
    return self.run_with_retries(
        lambda: store_now(rt, payload), lambda exc: _dead_letter(self, rt, payload, exc)
    )


def store_now(rt: Runtime, payload: dict[str, Any]) -> dict[str, Any]:
    """Store one batch payload with this worker's dedup window and source terms (the batch
    task, the drains and the DLQ replay all store through here)."""
    purpose, classification = _source_terms(rt, str(payload.get("source")))
    stored = store_event_batch(payload, rt.sink, _dedup_index(rt), purpose, classification)
    return stored.summary()


@shared_task(bind=True, name=DRAIN_TASK, acks_late=True, ignore_result=True)
def drain(self: Any, source: str, slot: int, token: str) -> dict[str, Any]:
    """Store ``source``'s accepted events from its stream, holding ``slot``'s lease ``token``."""
    rt = runtime()
    drainer = _drainer(rt)
    if not drainer.renew(source, slot, token):
        return {"source": source, "skipped": "lease lost"}  # expired: a newer drain runs

    def store(payload: dict[str, Any]) -> None:
        contexts = [context_from(t) for t in payload.pop("traces", [])]
        events = len(payload["events"])
        # The first traced request's trace continues here; the others are linked.
        with batch_span("ingest.webhooks.store", contexts, **{"ingest.events": events}):
            result = store_now(rt, payload)
        if not result.get("alreadyStored"):
            metrics.observe_batch(source, len(payload["events"]))
            _observe_latencies(source, payload["events"], time.time())

    def dead_letter(payload: dict[str, Any], deliveries: int) -> None:
        exc = RuntimeError(f"not stored after {deliveries} deliveries")
        drop = ("streamIds", "streamSizes", "traces")
        payload = {k: v for k, v in payload.items() if k not in drop}
        entry = task_entry(
            task_name=TASK_NAME,
            task_id=str(payload["batchId"]),
            args=[payload],
            kwargs={},
            exc=exc,
            source=webhook_source(source),
            retries=deliveries,
            extra={"batchId": payload["batchId"], "events": len(payload["events"])},
        )
        rt.dlq.add(entry)  # raises when it cannot: the entries then stay pending
        metrics.observe_task_dead_lettered(DRAIN_TASK)
        log.error("webhook batch %s dead-lettered as %s", payload["batchId"], entry.id)

    def spawn(next_slot: int) -> None:
        next_token = drainer.acquire(source, next_slot)
        if next_token is not None:
            self.app.send_task(
                DRAIN_TASK, args=[source, next_slot, next_token], queue=QUEUE, ignore_result=True
            )

    report = drainer.drain(source, slot, token, store, dead_letter, spawn)
    return {"source": source, **report.__dict__}


def _observe_latencies(source: str, events: list[dict[str, Any]], now: float) -> None:
    """Each event's pre-storage latency, once per distinct receipt time with its count (the
    events of one batch request share theirs): one histogram update, not a thousand."""
    histogram = metrics.WEBHOOK_PRE_STORAGE_LATENCY.labels(metrics.source_label(source))
    for epoch, count in Counter(event["receivedAtEpoch"] for event in events).items():
        seconds = max(0.0, now - epoch)
        try:  # prometheus-client has no weighted observe: what observe() does, count times
            bounds, buckets, total = histogram._upper_bounds, histogram._buckets, histogram._sum
        except AttributeError:
            for _ in range(count):
                histogram.observe(seconds)
            continue
        total.inc(seconds * count)
        for bound, bucket in zip(bounds, buckets, strict=True):
            if seconds <= bound:
                bucket.inc(count)
                break


def _text_client(client: redis.Redis) -> redis.Redis:
    """A client like ``client`` whose replies hiredis decodes to text (stream entries are
    read field by field; decoding them in C costs a fraction of doing it in Python)."""
    kwargs = dict(client.connection_pool.connection_kwargs)
    kwargs.update(decode_responses=True, encoding_errors="surrogatepass")
    pool = redis.ConnectionPool(connection_class=client.connection_pool.connection_class, **kwargs)
    return redis.Redis(connection_pool=pool)


def _drainer(rt: Runtime) -> StreamDrainer:
    global _drainer_cache
    cached = _drainer_cache
    if cached is None or cached[0] is not rt:
        http = rt.settings.http
        drainer = StreamDrainer(
            _text_client(rt.redis),
            f"{socket.gethostname()}:{os.getpid()}",
            batch_size=http.buffer_size,
            redeliver_after=http.redeliver_after,
            max_deliveries=rt.settings.celery.max_retries + 1,
        )
        cached = _drainer_cache = (rt, drainer)
    return cached[1]


def _dead_letter(
    task: IngestTask, rt: Runtime, payload: dict[str, Any], exc: BaseException
) -> dict[str, Any]:
    """Put the batch into the DLQ; if even that fails, retry the task rather than lose it."""
    entry = task_entry(
        task_name=TASK_NAME,
        task_id=str(task.request.id),
        args=[payload],
        kwargs={},
        exc=exc,
        source=webhook_source(str(payload.get("source") or "unknown")),
        retries=task.request.retries,
        extra={"batchId": payload.get("batchId"), "events": len(payload.get("events") or [])},
    )
    try:
        rt.dlq.add(entry)
    except Exception as dlq_exc:
        # The message is still ours (acks_late): retrying keeps the batch instead of losing it.
        log.error("cannot dead-letter webhook batch %s: %s", payload.get("batchId"), dlq_exc)
        raise task.retry(exc=dlq_exc, countdown=_DLQ_RETRY_SECONDS) from dlq_exc
    log.error("webhook batch %s dead-lettered as %s: %s", payload.get("batchId"), entry.id, exc)
    return {"batchId": payload.get("batchId"), "deadLettered": True, "dlqEntry": entry.id}
