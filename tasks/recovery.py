"""Give a dead worker's unacknowledged tasks back to the queues when a worker starts.

With ``acks_late``, a task whose worker was killed stays in Redis's ``unacked`` hash until the
visibility timeout passes. Workers should not wait that long: every worker, from its main
process, asks the live workers which tasks they hold and restores the unacknowledged
messages that nobody holds and that are older than a short grace period (a live worker may
have just received a message it has not reported yet) — at start, again just past the grace
period, then every ``SWEEP_INTERVAL`` seconds. Tasks are idempotent, so the rare double
restore costs work, not correctness.

S3 import tasks (``ingest.s3.*``) are left alone: the import ledger (``tasks/ledger.py``)
re-dispatches their work from leases, which also covers the messages kombu loses between
``BRPOP`` and its unacked record; the visibility timeout still returns their old messages,
whose second run finds the work done.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_ready

__all__ = ["held_task_ids", "restore_orphaned_tasks"]

log = logging.getLogger(__name__)
GRACE_SECONDS = 10.0
LEDGER_TASKS = "ingest.s3."  # recovered by the import ledger, not from kombu's unacked hash


def held_task_ids(app: Celery, exclude: str | None = None, timeout: float = 2.0) -> set[str]:
    """Ids of tasks every live worker (but ``exclude``) is running or has reserved."""
    inspect = app.control.inspect(timeout=timeout)
    held: set[str] = set()
    for method in (inspect.active, inspect.reserved, inspect.scheduled):
        for worker, tasks in (method() or {}).items():
            if worker == exclude:
                continue
            for task in tasks or []:
                request = task.get("request", task)
                if request.get("id"):
                    held.add(request["id"])
    return held


def restore_orphaned_tasks(
    app: Celery, exclude: str | None = None, grace: float = GRACE_SECONDS
) -> int:
    """Restore unacknowledged messages no live worker holds; returns how many."""
    held = held_task_ids(app, exclude)
    restored = 0
    with app.connection_for_write() as conn:
        channel: Any = conn.default_channel
        qos = channel.qos
        client = channel.client
        cutoff = time.time() - grace
        for tag, payload in client.hgetall(qos.unacked_key).items():
            score = client.zscore(qos.unacked_index_key, tag)
            if score is not None and score > cutoff:
                continue
            message = json.loads(payload)[0]
            if str(message.get("headers", {}).get("task", "")).startswith(LEDGER_TASKS):
                continue
            task_id = message.get("headers", {}).get("id") or message.get("properties", {}).get(
                "correlation_id"
            )
            if task_id in held:
                continue
            qos.restore_by_tag(tag.decode() if isinstance(tag, bytes) else tag, leftmost=True)
            restored += 1
    return restored


SWEEP_INTERVAL = 30.0


def _sweep(app: Celery, hostname: str) -> None:
    try:
        restored = restore_orphaned_tasks(app, exclude=hostname)
    except Exception:  # recovery is best effort; the visibility timeout still applies
        log.exception("could not restore orphaned tasks")
        return
    if restored:
        log.warning("restored %d unacknowledged tasks of a dead worker", restored)


def _sweep_forever(app: Celery, hostname: str) -> None:
    # Once at start, once more just past the grace period (messages a dead worker took
    # moments before it died were too young the first time), then now and then, so a dead
    # worker's tasks come back even when no new worker starts.
    _sweep(app, hostname)
    time.sleep(GRACE_SECONDS + 1)
    while True:
        _sweep(app, hostname)
        time.sleep(SWEEP_INTERVAL)


@worker_ready.connect
def _recover_at_start(sender: Any = None, **_: Any) -> None:
    if sender is None or not sender.app.conf.broker_url.startswith(("redis://", "rediss://")):
        return
    threading.Thread(
        target=_sweep_forever,
        args=(sender.app, sender.hostname),
        name="ingest-task-recovery",
        daemon=True,
    ).start()


# Celery logs "Unrecoverable error" (logger celery.worker) and then stops the worker. With the
# Redis transport, that stop can wedge when the broker went away mid-task (kombu fails to
# ack, then to restore): the process stays alive and consumes nothing, so no supervisor
# restarts it. This long after such an error, the process exits by force; its unacknowledged
# tasks come back at the next worker's start (above).
UNRECOVERABLE_EXIT_GRACE = 30.0


class ExitAfterUnrecoverable(logging.Handler):
    """Exits the process ``grace`` seconds after Celery logged an unrecoverable error."""

    def __init__(self, grace: float = UNRECOVERABLE_EXIT_GRACE) -> None:
        super().__init__(logging.CRITICAL)
        self.grace = grace
        self.armed = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.armed or record.levelno < logging.CRITICAL:
            return
        if not str(record.msg).startswith("Unrecoverable error"):
            return
        self.armed = True
        timer = threading.Timer(self.grace, _exit_now, args=(self.grace,))
        timer.daemon = True
        timer.start()


def _exit_now(grace: float) -> None:
    log.critical("worker still running %.0f s after an unrecoverable error: exiting", grace)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(1)


@worker_init.connect
def _exit_if_shutdown_wedges(**_: Any) -> None:
    logging.getLogger("celery.worker").addHandler(ExitAfterUnrecoverable())
