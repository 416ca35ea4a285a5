"""Webhook batch metrics read off Celery messages: a batch's size when the web publishes it, and
each event's pre-storage latency when a worker has stored it.

Both come from the batch payload (see ``ingest.webhooks.storage``), so the web's publisher and the
batch task need no metrics code of their own.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ingest.observability import metrics
from tasks.names import WEBHOOK_STORE_BATCH

__all__ = ["BATCH_TASK", "observe_published_batch", "observe_stored_batch"]

BATCH_TASK = WEBHOOK_STORE_BATCH


def _payload(args: Any) -> Mapping[str, Any] | None:
    if isinstance(args, (list, tuple)) and args and isinstance(args[0], Mapping):
        payload = args[0]
        return payload if isinstance(payload.get("events"), list) else None
    return None


def _message_args(body: Any) -> Any:
    # Task protocol 2 bodies are (args, kwargs, embed); protocol 1 bodies are dicts.
    if isinstance(body, (list, tuple)) and body:
        return body[0]
    return body.get("args") if isinstance(body, Mapping) else None


def observe_published_batch(task_name: Any, body: Any) -> None:
    """Count the events of a webhook batch message about to be published."""
    payload = _payload(_message_args(body)) if task_name == BATCH_TASK else None
    if payload is not None:
        metrics.observe_batch(str(payload.get("source")), len(payload["events"]))


def observe_stored_batch(
    task_name: str | None, args: Any, state: str | None, result: Any, now: float | None = None
) -> None:
    """Record how long each event of a batch stored just now waited since it arrived."""
    if task_name != BATCH_TASK or state != "SUCCESS" or not isinstance(result, Mapping):
        return
    if result.get("deadLettered") or result.get("alreadyStored"):
        return  # nothing was written now
    payload = _payload(args)
    if payload is None:
        return
    now = time.time() if now is None else now
    source = str(payload.get("source"))
    for event in payload["events"]:
        arrived = event.get("receivedAtEpoch") if isinstance(event, Mapping) else None
        if isinstance(arrived, (int, float)):
            metrics.observe_pre_storage_latency(source, now - arrived)
