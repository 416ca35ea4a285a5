"""Starting an import: the one path shared by ``POST /admin/imports`` and ``ingest import``.

Cheap to import: the web process loads it, so it imports no task module (the scan is sent by
name through the one Celery app factory).
"""

from __future__ import annotations

from typing import Any

import redis

from ingest.config import Settings
from ingest.s3csv.submission import KnownSchemas, record_import
from tasks.factory import app_for
from tasks.names import QUEUE_CONTROL, S3_SCAN

__all__ = ["submit_import"]


def submit_import(
    settings: Settings,
    client: redis.Redis,
    schemas: KnownSchemas,
    payload: dict[str, Any],
    ingested_by: str,
) -> str:
    """Validate an import request, record it as queued, and send the scan task; return its id."""
    import_id = record_import(settings, client, schemas, payload, ingested_by)
    # ignore_result: the import's state lives in its record and ledger, not in a task result.
    app_for(settings).send_task(S3_SCAN, args=[import_id], queue=QUEUE_CONTROL, ignore_result=True)
    return import_id
