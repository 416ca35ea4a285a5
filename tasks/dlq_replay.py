"""Sending dead-letter entries for replay, and waiting for how each ended.

Shared by ``POST /admin/dlq/retry`` and ``ingest dlq retry``; cheap to import (the web loads
it): the replay task (``tasks.dlq``) runs in the workers and is sent here by name.
"""

from __future__ import annotations

import time
from typing import Any, cast

from ingest.dlq import EntryKind
from ingest.runtime import Runtime
from tasks.factory import app_for
from tasks.names import QUEUE_DLQ, RETRY_DLQ_ENTRY

__all__ = ["retry_entries"]


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
    sender = app_for(rt.settings)
    results, skipped = [], 0
    for entry_id in _select(rt, ids, kind, source, import_id):
        if not rt.dlq.claim_for_retry(entry_id, lease_seconds=max(60, int(timeout))):
            skipped += 1
            continue
        results.append(sender.send_task(RETRY_DLQ_ENTRY, args=[entry_id], queue=QUEUE_DLQ))
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
