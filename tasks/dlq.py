"""Replaying dead-letter entries: each goes back through processing, with lineage.

An entry leaves the DLQ only when its replay succeeds; a replay that fails again increments
its ``attempts``. Records stored by a replay carry ``parentId`` = the entry's id and
``dlq-retry`` in their ``transformations``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

from celery import shared_task
from celery.app.task import Task

from ingest.dlq import DeadLetterEntry, EntryKind, FailureDetail
from ingest.runtime import Runtime
from ingest.s3csv.imports import ImportStore
from tasks.app import QUEUE_DLQ
from tasks.base import IngestTask, runtime
from tasks.sender import sender_for

__all__ = ["REPLAYERS", "retry_entries", "retry_entry"]

Replayer = Callable[[Runtime, DeadLetterEntry], None]
REPLAYERS: dict[str, Replayer] = {}


def replayer(name: str) -> Callable[[Replayer], Replayer]:
    """Register how entries of a kind (``row``) or a task name (``task:ingest.s3.range``) replay."""

    def register(fn: Replayer) -> Replayer:
        REPLAYERS[name] = fn
        return fn

    return register


class ReplayFailed(RuntimeError):
    """The replay ran but the work still fails (for example, the row is still invalid)."""


@replayer("row")
def replay_row(rt: Runtime, entry: DeadLetterEntry) -> None:
    from ingest.s3csv.pipeline import RangeProcessor

    processor = RangeProcessor(rt.settings, rt.s3, rt.sink, rt.schemas, rt.dedup, rt.dlq, rt.redis)
    rejected = processor.replay_row(entry)
    if rejected:
        raise ReplayFailed(rejected)


@replayer("task:ingest.s3.range")
def replay_range(rt: Runtime, entry: DeadLetterEntry) -> None:
    from ingest.s3csv.pipeline import RangeProcessor, RangeSpec

    spec = RangeSpec.model_validate({**entry.payload["args"][0], "parentId": entry.id})
    processor = RangeProcessor(rt.settings, rt.s3, rt.sink, rt.schemas, rt.dedup, rt.dlq, rt.redis)
    summary = processor.process(spec)
    ImportStore(rt.redis).recover_range(spec.importId, summary)


@replayer("task:ingest.webhooks.store_batch")
def replay_webhook_batch(rt: Runtime, entry: DeadLetterEntry) -> None:
    """Store a dead-lettered webhook batch again: same batch id, so the same file, once."""
    from tasks.webhooks import store_now

    store_now(rt, entry.payload["args"][0])


@replayer("task:ingest.s3.scan")
def replay_scan(rt: Runtime, entry: DeadLetterEntry) -> None:
    from tasks.s3 import scan_now

    import_id = entry.payload["args"][0]
    ImportStore(rt.redis).clear_errors(import_id)
    scan_now(import_id)
    state = ImportStore(rt.redis).get(import_id) or {}
    if state.get("planErrors"):
        raise ReplayFailed("; ".join(state.get("errors", []))[:500])


def _replayer_for(entry: DeadLetterEntry) -> Replayer:
    name = entry.kind if entry.kind != "task" else f"task:{entry.payload.get('task')}"
    fn = REPLAYERS.get(name) or REPLAYERS.get(entry.kind)
    if fn is None:
        raise ReplayFailed(f"no way to replay entries of {name}")
    return fn


@shared_task(bind=True, base=IngestTask, name="ingest.dlq.retry_entry", acks_late=True)
def retry_entry(self: Task, entry_id: str) -> dict[str, Any]:
    """Replay one entry; remove it on success, count the failure otherwise."""
    rt = runtime()
    entry = rt.dlq.get(entry_id)
    if entry is None:
        return {"id": entry_id, "status": "gone"}
    try:
        _replayer_for(entry)(rt, entry)
    except Exception as exc:
        rt.dlq.record_failure(entry_id, FailureDetail.from_exception(exc), reason=str(exc)[:300])
        return {"id": entry_id, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    rt.dlq.remove(entry_id)
    return {"id": entry_id, "status": "succeeded"}


def _select(
    rt: Runtime, ids: list[str] | None, kind: str | None, source: str | None, import_id: str | None
) -> list[str]:
    if ids:
        missing = [i for i in ids if rt.dlq.get(i) is None]
        if missing:
            raise LookupError(f"not in the DLQ: {', '.join(missing)}")
        return ids
    return [
        e.id
        for e in rt.dlq.iter_entries(
            kind=cast(EntryKind | None, kind),
            source=source,
            import_id=import_id,
        )
    ]


def retry_entries(
    rt: Runtime,
    ids: list[str] | None = None,
    kind: str | None = None,
    source: str | None = None,
    import_id: str | None = None,
    wait: bool = True,
    timeout: float = 300,
) -> dict[str, Any]:
    """Send entries to the DLQ queue for replay; with ``wait``, report how each ended."""
    sender = sender_for(rt.settings)
    results, skipped = [], 0
    for entry_id in _select(rt, ids, kind, source, import_id):
        if not rt.dlq.claim_for_retry(entry_id, lease_seconds=max(60, int(timeout))):
            skipped += 1
            continue
        results.append(sender.send_task("ingest.dlq.retry_entry", args=[entry_id], queue=QUEUE_DLQ))
    outcomes: list[dict[str, Any]] = []
    report: dict[str, Any] = {
        "submitted": len(results),
        "skipped": skipped,
        "succeeded": 0,
        "failed": 0,
        "pending": len(results) if wait else 0,
        "results": outcomes,
    }
    if wait:
        deadline = time.monotonic() + timeout
        for result in results:
            try:
                outcome = result.get(timeout=max(0.1, deadline - time.monotonic()))
            except Exception:  # timed out or the worker failed: still pending
                continue
            report["pending"] -= 1
            report["succeeded" if outcome["status"] in ("succeeded", "gone") else "failed"] += 1
            outcomes.append(outcome)
    report["depth"] = rt.dlq.depth()
    return report
