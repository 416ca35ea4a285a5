"""The watches' pollers inside the ``worker`` entry, and the replay of malformed notifications.

Every worker started from the Procfile polls every configured watch from its main process
(one thread per watch, started once the worker is ready, stopped when it shuts down): a
worker started on another machine polls too, and SQS shares the messages between them.
``s3csv.pollWatches = false`` keeps a worker from polling. See docs/s3-import.md.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import worker_init, worker_ready, worker_shutdown

from ingest.config import Settings
from ingest.runtime import Runtime
from ingest.s3csv.imports import ImportStore
from ingest.s3csv.notifications import parse_notification
from ingest.s3csv.watch_poller import start_pollers
from ingest.s3csv.watches import NOTIFICATION_TASK, QueueMessage, WatchIntake
from tasks.factory import app_for
from tasks.names import QUEUE_CONTROL, S3_SCAN

__all__ = ["dispatcher", "replay_notification"]

log = logging.getLogger(__name__)
_stop = threading.Event()


def dispatcher(settings: Settings) -> Any:
    """Queue an import's scan task: the same path as ``POST /admin/imports`` from there on."""
    sender = app_for(settings)

    def dispatch(import_id: str) -> None:
        sender.send_task(S3_SCAN, args=[import_id], queue=QUEUE_CONTROL, ignore_result=True)

    return dispatch


@worker_ready.connect
def _start_polling(sender: Any = None, **_: Any) -> None:
    settings: Settings | None = getattr(getattr(sender, "app", None), "conf", {}).get(
        "ingest_settings"
    )
    if settings is None or not settings.s3csv.watches or not settings.s3csv.poll_watches:
        return
    # A runtime of this main process's own: the pool's children build theirs after the fork.
    rt = Runtime(settings)
    _stop.clear()
    start_pollers(
        settings, rt.redis, rt.dlq, dispatcher(settings), lambda name: name in rt.schemas, _stop
    )


@worker_shutdown.connect
def _stop_polling(**_: Any) -> None:
    # Messages received but not settled come back after the queue's visibility timeout.
    _stop.set()


@worker_init.connect
def _register_replay(**_: Any) -> None:
    # Registered once the worker's modules are loaded: tasks.dlq imports the Celery app, whose
    # task discovery imports this module, so importing tasks.dlq here at load time is a cycle.
    from tasks.dlq import replayer

    replayer(f"task:{NOTIFICATION_TASK}")(replay_notification)


def replay_notification(rt: Runtime, entry: Any) -> None:
    """Read a dead-lettered notification again; it imports its objects if it is readable now."""
    from tasks.dlq import ReplayFailed

    watch_name, body = entry.payload["args"][:2]
    watch = next((w for w in rt.settings.s3csv.watches if w.name == watch_name), None)
    if watch is None:
        raise ReplayFailed(f"no watch named {watch_name!r} is configured")
    notification = parse_notification(body)
    if notification.kind == "malformed":
        raise ReplayFailed(f"still not an S3 event notification: {notification.reason}")
    intake = WatchIntake(
        watch,
        ImportStore(rt.redis),
        rt.dlq,
        dispatcher(rt.settings),
        rt.settings.s3csv.allowed_buckets,
    )
    message_id = str(entry.payload.get("messageId") or entry.id)
    intake.handle([QueueMessage(message_id=message_id, receipt_handle="", body=body)])
