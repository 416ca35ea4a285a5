"""Replaying dead-letter entries: each goes back through processing, with lineage.

An entry leaves the DLQ only when its replay succeeds; a replay that fails again increments
its ``attempts``. Records stored by a replay carry ``parentId`` = the entry's id and
``dlq-retry`` in their ``transformations``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import shared_task
from celery.app.task import Task

from ingest.dlq import DeadLetterEntry, FailureDetail
from ingest.runtime import Runtime
from ingest.s3csv.imports import ImportStore
from tasks.base import IngestTask, runtime
from tasks.dlq_replay import retry_entries
from tasks.names import RETRY_DLQ_ENTRY

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


@shared_task(bind=True, base=IngestTask, name=RETRY_DLQ_ENTRY, acks_late=True)
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
