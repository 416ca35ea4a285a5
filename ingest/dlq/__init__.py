"""The dead-letter queue: failed tasks, rejected CSV rows and unstorable webhook events, kept in
Redis by the application so that an operator can list, retry and purge them (see docs/dlq.md)."""

from __future__ import annotations

from ingest.dlq.entries import event_entry, row_entry, task_entry
from ingest.dlq.model import (
    RETRY_HISTORY_LIMIT,
    RETRY_TRANSFORMATION,
    DeadLetterEntry,
    EntryKind,
    FailureDetail,
    RetryRecord,
    entry_id_for,
    utc_now_iso,
    webhook_source,
)
from ingest.dlq.store import AddResult, DeadLetterQueue, DeadLetterQueueFull

__all__ = [
    "RETRY_HISTORY_LIMIT",
    "RETRY_TRANSFORMATION",
    "AddResult",
    "DeadLetterEntry",
    "DeadLetterQueue",
    "DeadLetterQueueFull",
    "EntryKind",
    "FailureDetail",
    "RetryRecord",
    "entry_id_for",
    "event_entry",
    "row_entry",
    "task_entry",
    "utc_now_iso",
    "webhook_source",
]
