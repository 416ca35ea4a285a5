"""Celery tasks of the S3/CSV import: scan a prefix, fan ranges out in chords, close the import.

The plan (one small JSON descriptor per range) lives in Redis, not in task messages, so a
prefix with thousands of objects becomes a series of chords of ``s3csv.fanoutChunk`` range
tasks each: no giant chord, no giant message. Each chunk's callback starts the next chunk,
and the last one closes the import.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import redis
from celery import chord, shared_task
from celery.app.task import Task
from celery.exceptions import Retry

from ingest.dlq import task_entry
from ingest.errors import PermanentError
from ingest.observability.metrics import observe_import_range
from ingest.runtime import Runtime
from ingest.s3csv.imports import ImportStore, RangeSummary
from ingest.s3csv.ledger import SCAN, ImportLedger
from ingest.s3csv.pipeline import RangeProcessor, RangeSpec
from ingest.s3csv.planning import plan_import
from ingest.s3csv.sweeper import stall_entry_id
from ingest.s3csv.watches import watched_objects
from tasks.base import FOREVER, IngestTask, runtime
from tasks.names import QUEUE_CONTROL, QUEUE_RANGES

__all__ = ["close_chunk", "process_range", "scan_import"]

log = logging.getLogger(__name__)
PLAN_TTL = 7 * 86400


def _store() -> ImportStore:
    return ImportStore(runtime().redis)


def _plan_key(import_id: str) -> str:
    return f"ingest:import:{import_id}:plan"


def ledger() -> ImportLedger:
    """The import ledger of this process (see ``ingest.s3csv.ledger``)."""
    rt = runtime()
    return ImportLedger(rt.redis, rt.settings.s3csv.lease_seconds)


def _hold_lease_over_retry(import_id: str, member: str, retry: Retry) -> None:
    """A retry is scheduled: keep the lease until it is due, plus a lease to start it."""
    when = retry.when
    if isinstance(when, datetime):
        delay = max(0.0, when.timestamp() - datetime.now(when.tzinfo).timestamp())
    else:
        delay = float(when or 0)
    book = ledger()
    try:
        book.lease(import_id, member, delay + book.lease_seconds)
    except redis.RedisError:  # the lease runs out and a sweeper sends it again: only work
        log.warning("could not extend the lease of %s/%s over its retry", import_id, member)


@shared_task(bind=True, base=IngestTask, name="ingest.s3.scan", acks_late=True)
def scan_import(self: Task, import_id: str) -> dict[str, Any]:
    """List the prefix page by page, plan record-aligned ranges, and start the first chunk.

    A scan that keeps failing (a missing bucket, denied access, a wrong endpoint) ends the
    import ``failed``, with the reason in ``errors`` and a DLQ entry that replays the scan.
    """
    rt = runtime()
    try:
        return self.run_with_retries(
            lambda: scan_now(import_id),
            on_give_up=lambda exc: _scan_failed(rt, import_id, exc, self),
        )
    except Retry as retry:
        _hold_lease_over_retry(import_id, SCAN, retry)
        raise


def scan_now(import_id: str) -> dict[str, Any]:
    """Plan an import and dispatch its first chunk; objects that cannot be planned fail it."""
    rt = runtime()
    store = _store()
    found = store.request_of(import_id)
    if found is None:
        raise PermanentError(f"unknown import {import_id}")
    request, ingested_by = found
    book = ledger()
    book.track(import_id)
    with book.heartbeat(import_id, SCAN):
        plan = plan_import(
            rt.settings,
            rt.s3,
            rt.schemas,
            request,
            import_id,
            ingested_by,
            objects=watched_objects(store, import_id, rt.s3),
        )
    key = _plan_key(import_id)
    # A re-plan (a DLQ replay) starts its chunks afresh: drop the old plan's markers.
    old_chunks = -(-int(rt.redis.llen(key)) // rt.settings.s3csv.fanout_chunk)
    with rt.redis.pipeline() as pipe:
        pipe.delete(key, *[f"{key}:dispatched:{i}" for i in range(old_chunks)])
        for start in range(0, len(plan.ranges), 1000):
            pipe.rpush(key, *[spec.model_dump_json() for spec in plan.ranges[start : start + 1000]])
        pipe.expire(key, PLAN_TTL)
        pipe.execute()
    store.mark_running(
        import_id, plan.objects, plan.bytes_total, len(plan.ranges), plan_errors=len(plan.errors)
    )
    for error in plan.errors:
        store.add_error(import_id, error)
    if plan.errors:
        # Replaying this entry plans the import again once the objects are fixed.
        rt.dlq.add(
            task_entry(
                task_name="ingest.s3.scan",
                task_id=f"plan-{import_id}",
                args=[import_id],
                kwargs={},
                exc=PermanentError("; ".join(plan.errors)[:500]),
                source=request.uri,
                import_id=import_id,
            )
        )
    if not plan.ranges:
        store.finish(import_id, "failed" if plan.errors else "succeeded")
        book.scan_done(import_id)
        return {"importId": import_id, "ranges": 0}
    dispatch_chunk(import_id, 0)
    book.scan_done(import_id)
    return {"importId": import_id, "ranges": len(plan.ranges), "objects": plan.objects}


def _scan_failed(rt: Runtime, import_id: str, exc: BaseException, task: Task) -> dict[str, Any]:
    store = _store()
    found = store.request_of(import_id)
    source = found[0].uri if found else f"import:{import_id}"
    rt.dlq.add(
        task_entry(
            task_name="ingest.s3.scan",
            task_id=task.request.id or import_id,
            args=[import_id],
            kwargs={},
            exc=exc,
            source=source,
            retries=task.request.retries,
            import_id=import_id,
        )
    )
    if found is not None:
        store.add_error(import_id, f"scan of {source} failed: {type(exc).__name__}: {exc}")
        store.finish(import_id, "failed")
    ledger().scan_done(import_id)
    return {"importId": import_id, "failed": True}


def dispatch_chunk(import_id: str, chunk: int) -> bool:
    """Start chunk ``chunk`` of an import's ranges as a chord; False when none are left."""
    rt = runtime()
    size = rt.settings.s3csv.fanout_chunk
    raw = rt.redis.lrange(_plan_key(import_id), chunk * size, (chunk + 1) * size - 1)
    if not raw:
        return False
    # In the ledger before anything is sent: a range whose message is lost, or a chunk whose
    # dispatch stops halfway, is then owed a result and sent again when its lease runs out.
    specs = [item.decode() if isinstance(item, bytes) else item for item in raw]
    ledger().register(import_id, [(json.loads(s)["rangeId"], s) for s in specs])
    # A callback delivered twice must not start the same chunk twice.
    marker = f"{_plan_key(import_id)}:dispatched:{chunk}"
    if not rt.redis.set(marker, 1, nx=True, ex=PLAN_TTL):
        return True
    header = [process_range.s(json.loads(item)).set(queue=QUEUE_RANGES) for item in raw]
    callback = close_chunk.s(import_id, chunk).set(queue=QUEUE_CONTROL)
    chord(header)(callback)
    return True


@shared_task(bind=True, base=IngestTask, name="ingest.s3.range", acks_late=True)
def process_range(self: Task, spec: dict[str, Any]) -> dict[str, Any]:
    """Parse, validate, dedup, stamp and store one range; return its counts (never rows).

    Retryable failures retry with backoff; once retries are exhausted the range is
    dead-lettered and reported as failed, so the chord always completes.
    """
    rt = runtime()
    range_spec = RangeSpec.model_validate(spec)
    processor = RangeProcessor(rt.settings, rt.s3, rt.sink, rt.schemas, rt.dedup, rt.dlq, rt.redis)
    book = ledger()
    import_id, range_id = range_spec.importId, range_spec.rangeId

    def work() -> RangeSummary:
        # Crediting is part of the work: an error there retries the range (which resumes from
        # its stored output), so a range never ends without its result credited.
        with book.heartbeat(import_id, range_id):
            return _settle(range_spec, processor.process(range_spec))

    def give_up(exc: BaseException) -> RangeSummary:
        summary = processor.give_up(range_spec, exc, self)
        try:
            return _settle(range_spec, summary)
        except (redis.RedisError, OSError) as lost:
            # Dead-lettered but not credited: run again later; the DLQ entry is kept once.
            raise self.retry(exc=lost, countdown=5, max_retries=FOREVER) from lost

    try:
        summary = self.run_with_retries(
            work, on_give_up=give_up, on_blocked=lambda: book.block(import_id)
        )
    except Retry as retry:
        _hold_lease_over_retry(import_id, range_id, retry)
        raise
    observe_import_range(
        range_spec.schema_name,
        bytes_read=summary.bytes,
        stored=summary.rowsStored,
        rejected=summary.rowsRejected,
        duplicates=summary.duplicatesDropped,
        resumed=summary.resumed,
        failed=summary.failed,
    )
    return summary.model_dump()


def _settle(spec: RangeSpec, summary: RangeSummary) -> RangeSummary:
    """Credit a range's result once and mark it settled in the ledger."""
    store = _store()
    credited = store.credit_range(spec.importId, summary)
    if not credited and not summary.failed and store.recover_range(spec.importId, summary):
        # The stall bound had given this range up; it completed after all.
        runtime().dlq.remove(stall_entry_id(spec.importId, spec.rangeId))
    ledger().settle(spec.importId, spec.rangeId, summary.failed)
    return summary


@shared_task(
    bind=True,
    base=IngestTask,
    name="ingest.s3.close_chunk",
    acks_late=True,
    max_retries=10,
    # redis-py's errors are not OSErrors: without RedisError here, a Redis blip while
    # closing would end the chain and leave the import running.
    autoretry_for=(OSError, redis.RedisError),
    retry_backoff=True,
)
def close_chunk(self: Task, results: list[dict[str, Any]], import_id: str, chunk: int) -> str:
    """Credit a finished chunk, then start the next one or close the import."""
    store = _store()
    book = ledger()
    for result in results:
        # Ranges credit themselves; this covers a range whose own credit was lost.
        summary = RangeSummary.model_validate(result)
        store.credit_range(import_id, summary)
        book.settle(import_id, summary.rangeId, summary.failed)
    if dispatch_chunk(import_id, chunk + 1):
        return "next chunk dispatched"
    state = store.get(import_id) or {}
    failed = bool(state.get("ranges", {}).get("failed")) or bool(state.get("planErrors"))
    store.finish_if_running(import_id, "failed" if failed else "succeeded")
    book.forget(import_id)
    status = "failed" if failed else "succeeded"
    log.info("import finished", extra={"import_id": import_id, "status": status})
    return status
