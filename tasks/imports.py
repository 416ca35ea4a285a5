"""Starting an import: the one path shared by ``POST /admin/imports`` and ``ingest import``."""

from __future__ import annotations

from typing import Any

import redis

from ingest.config import Settings
from ingest.s3csv.imports import ImportRequest, ImportRequestError, ImportStore
from ingest.s3csv.ledger import ImportLedger
from ingest.schemas import SchemaRegistry
from tasks.app import QUEUE_CONTROL
from tasks.sender import sender_for

__all__ = ["submit_import"]


def submit_import(
    settings: Settings,
    client: redis.Redis,
    schemas: SchemaRegistry,
    payload: dict[str, Any],
    ingested_by: str,
) -> str:
    """Validate an import request, record it as queued, and send the scan task; return its id."""
    try:
        request = ImportRequest.model_validate(payload)
    except ImportRequestError:
        raise
    except ValueError as exc:
        raise ImportRequestError(_first_error(exc)) from exc
    request.check_bucket(settings.s3csv.allowed_buckets)
    if request.schema_name not in schemas:
        raise ImportRequestError(
            f"unknown schema {request.schema_name!r}; known: {', '.join(schemas.names())}"
        )
    store = ImportStore(client)
    import_id = store.create(request, ingested_by)
    store.index(import_id)
    # Owed a scan from now on: a scan message lost in the broker is sent again.
    ImportLedger(client, settings.s3csv.lease_seconds).track(import_id)
    # ignore_result: the import's state lives in its record and ledger, not in a task result.
    sender_for(settings).send_task(
        "ingest.s3.scan", args=[import_id], queue=QUEUE_CONTROL, ignore_result=True
    )
    return import_id


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        message = str(first["msg"]).removeprefix("Value error, ")
        return f"{where}: {message}"
    return str(exc)
