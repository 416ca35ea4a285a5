"""Task and queue names: the one place they are spelled, importable without side effects.

The web process and the CLI send tasks by name through :func:`tasks.factory.app_for`; they
import this module, never a task module (which would load the CSV pipeline, pandas and
pyarrow). The task modules register their tasks under these names.
"""

from __future__ import annotations

__all__ = [
    "ALL_QUEUES",
    "PING",
    "QUEUE_CONTROL",
    "QUEUE_DLQ",
    "QUEUE_RANGES",
    "QUEUE_WEBHOOKS",
    "RETRY_DLQ_ENTRY",
    "S3_CLOSE_CHUNK",
    "S3_RANGE",
    "S3_SCAN",
    "S3_TASKS",
    "TASK_ROUTES",
    "WEBHOOK_DRAIN",
    "WEBHOOK_STORE_BATCH",
]

QUEUE_WEBHOOKS = "ingest.webhooks"
QUEUE_RANGES = "ingest.ranges"
QUEUE_CONTROL = "ingest.control"
QUEUE_DLQ = "ingest.dlq"
ALL_QUEUES = (QUEUE_WEBHOOKS, QUEUE_CONTROL, QUEUE_RANGES, QUEUE_DLQ)

S3_TASKS = "ingest.s3."  # the import tasks: their redelivery is the import ledger's
S3_SCAN = "ingest.s3.scan"
S3_RANGE = "ingest.s3.range"
S3_CLOSE_CHUNK = "ingest.s3.close_chunk"
WEBHOOK_DRAIN = "ingest.webhooks.drain"
WEBHOOK_STORE_BATCH = "ingest.webhooks.store_batch"
RETRY_DLQ_ENTRY = "ingest.dlq.retry_entry"
PING = "ingest.control.ping"

# Task name (or prefix with ``*``) -> queue: each workload has a queue of its own.
TASK_ROUTES: dict[str, dict[str, str]] = {
    "ingest.webhooks.*": {"queue": QUEUE_WEBHOOKS},
    S3_RANGE: {"queue": QUEUE_RANGES},
    "ingest.s3.*": {"queue": QUEUE_CONTROL},
    "ingest.control.*": {"queue": QUEUE_CONTROL},
    "ingest.dlq.*": {"queue": QUEUE_DLQ},
}
