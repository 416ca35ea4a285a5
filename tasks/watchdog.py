"""A worker whose shutdown wedges after an unrecoverable broker error exits by force.

Redelivery is not this module's business: S3 import tasks come back from the import ledger
(``tasks/ledger.py``), webhook events wait in their Redis Streams and are reclaimed by the
next drain (``ingest/webhooks/drain.py``), and a DLQ entry stays in the DLQ until its replay
succeeds. Kombu's visibility timeout remains the last resort for a message a dead worker held.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery.signals import worker_init

__all__ = ["ExitAfterUnrecoverable"]

log = logging.getLogger(__name__)

# Celery logs "Unrecoverable error" (logger celery.worker) and then stops the worker. With the
# Redis transport, that stop can wedge when the broker went away mid-task (kombu fails to
# ack, then to restore): the process stays alive and consumes nothing, so no supervisor
# restarts it. This long after such an error, the process exits by force; its work comes back
# as the module's docstring says.
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
