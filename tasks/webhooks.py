"""The webhook batch task: store a published batch of events, retry, then dead-letter the batch.

Delivery is at least once (``acks_late``); storing is idempotent per batch id, so a redelivered
message stores nothing twice. After ``celery.maxRetries`` failed attempts the whole batch goes
into the DLQ as one ``task`` entry whose args are the payload, so ``ingest dlq retry`` sends
the same batch (same id, same file name) through this task again.

The web process keeps every batch in the outbox until it is stored (``ingest.http.outbox``):
this task removes the entry once the batch is stored or dead-lettered, and postpones its
republishing while a retry is scheduled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from celery import shared_task
from celery.exceptions import Retry

from ingest.dedup import DedupIndex
from ingest.dlq import task_entry, webhook_source
from ingest.http.outbox import Outbox
from ingest.http.storage import store_event_batch
from ingest.runtime import Runtime
from tasks.base import IngestTask, runtime

__all__ = ["TASK_NAME", "store_batch"]

log = logging.getLogger(__name__)

TASK_NAME = "ingest.webhooks.store_batch"
_DLQ_RETRY_SECONDS = 60
# Fixed for good: changing it would split a source's existing dedup marks.
_DEDUP_PARTITIONS = 4
_dedup_cache: tuple[Runtime, DedupIndex] | None = None
_outbox_cache: tuple[Runtime, Outbox] | None = None


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

    def work() -> dict[str, Any]:
        purpose, classification = _source_terms(rt, str(payload.get("source")))
        dedup = _dedup_index(rt)
        return store_event_batch(payload, rt.sink, dedup, purpose, classification).summary()

    batch_id = str(payload.get("batchId"))
    outbox = _outbox(rt)
    try:
        result = self.run_with_retries(work, lambda exc: _dead_letter(self, rt, payload, exc))
    except Retry as retry:
        # Not stored yet, and a retry is scheduled: the sweeper must not republish meanwhile.
        _outbox_step(outbox.postpone, batch_id, _delay(retry))
        raise
    # Stored (or dead-lettered, where `ingest dlq retry` takes over): the outbox lets go.
    _outbox_step(outbox.done, batch_id)
    return result


def _outbox(rt: Runtime) -> Outbox:
    """The outbox on this process's runtime Redis (built once per runtime)."""
    global _outbox_cache
    cached = _outbox_cache
    if cached is None or cached[0] is not rt:
        cached = _outbox_cache = (rt, Outbox(rt.redis, rt.settings.http.redeliver_after))
    return cached[1]


def _outbox_step(step: Callable[..., None], *args: Any) -> None:
    # Best effort: an entry left behind is republished later and found already stored.
    try:
        step(*args)
    except Exception as exc:
        log.warning("outbox bookkeeping for batch %s failed: %s", args[0], exc)


def _delay(retry: Retry) -> float:
    """Seconds until a scheduled retry runs (``when`` is a countdown or an ETA)."""
    when = retry.when
    if isinstance(when, datetime):
        return max(0.0, (when - datetime.now(when.tzinfo or UTC)).total_seconds())
    return float(when or 0)


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
