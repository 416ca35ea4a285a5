"""Building entries: a rejected CSV row, a task that gave up, an unstorable webhook event."""

from __future__ import annotations

import base64
import builtins
from collections.abc import Iterable, Mapping
from typing import Any

from ingest.dlq.model import DeadLetterEntry, FailureDetail, _jsonable, entry_id_for, webhook_source

__all__ = ["event_entry", "row_entry", "task_entry"]


def row_entry(
    *,
    object_uri: str,
    etag: str,
    line: int,
    offset: int,
    raw: bytes,
    reason: str,
    import_id: str,
    schema: str,
    purpose: str,
    classification: str | None = None,
    mapping: Mapping[str, str] | None = None,
    failure_cases: Any = None,
    header: Iterable[str] = (),
) -> DeadLetterEntry:
    """A CSV row that failed validation; its id is fixed by object, ETag and byte offset.

    ``header`` is the object's CSV header, needed to turn the raw row back into columns.
    """
    payload = {
        "objectUri": object_uri,
        "etag": etag,
        "line": line,
        "offset": offset,
        "header": builtins.list(header),
        "rawBase64": base64.b64encode(raw).decode("ascii"),
        "rawText": raw.decode("utf-8", errors="replace"),
        "failureCases": _jsonable(failure_cases or []),
        "importId": import_id,
        "schema": schema,
        "purpose": purpose,
        "classification": classification,
        "mapping": dict(mapping or {}),
    }
    return DeadLetterEntry(
        id=entry_id_for("row", object_uri, etag, offset),
        kind="row",
        source=object_uri,
        reason=reason,
        payload=payload,
        import_id=import_id,
    )


def task_entry(
    *,
    task_name: str,
    task_id: str,
    args: Any,
    kwargs: Any,
    exc: BaseException,
    source: str,
    retries: int = 0,
    import_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> DeadLetterEntry:
    """A Celery task that exhausted its retries; its id is fixed by the Celery task id."""
    payload = {
        "task": task_name,
        "taskId": task_id,
        "args": _jsonable(args),
        "kwargs": _jsonable(kwargs),
        "retries": retries,
        **_jsonable(dict(extra or {})),
    }
    detail = FailureDetail.from_exception(exc)
    return DeadLetterEntry(
        id=entry_id_for("task", task_id),
        kind="task",
        source=source,
        reason=f"{detail.type}: {detail.message}",
        payload=payload,
        error=detail,
        import_id=import_id,
    )


def event_entry(
    *,
    source_name: str,
    event: Any,
    event_key: str,
    exc: BaseException,
    extra: Mapping[str, Any] | None = None,
) -> DeadLetterEntry:
    """An accepted webhook event that could not be stored; its id is fixed by its event key."""
    payload = {
        "source": source_name,
        "eventKey": event_key,
        "event": _jsonable(event),
        **_jsonable(dict(extra or {})),
    }
    detail = FailureDetail.from_exception(exc)
    return DeadLetterEntry(
        id=entry_id_for("event", source_name, event_key),
        kind="event",
        source=webhook_source(source_name),
        reason=f"{detail.type}: {detail.message}",
        payload=payload,
        error=detail,
    )
