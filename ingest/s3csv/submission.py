"""Recording a new import: the framework-free half of ``POST /admin/imports`` and ``ingest import``.

:func:`record_import` validates the request, records the import as ``queued`` and makes the
import ledger owe it a scan. The caller then sends the scan task (``tasks.imports``); a scan
message lost on the way is sent again by the ledger's sweeper.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Any, Protocol

import redis

from ingest.config import Settings
from ingest.s3csv.imports import ImportRequest, ImportRequestError, ImportStore
from ingest.s3csv.ledger import ImportLedger

__all__ = ["KnownSchemas", "first_error", "record_import"]


class KnownSchemas(Container[str], Protocol):
    """What an import request is checked against: ``name in schemas`` and ``schemas.names()``."""

    def names(self) -> Iterable[str]: ...


def record_import(
    settings: Settings,
    client: redis.Redis,
    schemas: KnownSchemas,
    payload: dict[str, Any],
    ingested_by: str,
) -> str:
    """Validate an import request, record it as queued and owed a scan; return its id."""
    try:
        request = ImportRequest.model_validate(payload)
    except ImportRequestError:
        raise
    except ValueError as exc:
        raise ImportRequestError(first_error(exc)) from exc
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
    return import_id


def first_error(exc: ValueError) -> str:
    """The first of a validation error's problems, as ``where: what``."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        message = str(first["msg"]).removeprefix("Value error, ")
        return f"{where}: {message}"
    return str(exc)
