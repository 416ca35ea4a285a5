"""A worker that stops working while it still looks alive exits, for its supervisor to restart.

Two ways a worker stays up and does nothing, both seen after a Redis restart:

- Celery logs an unrecoverable error and its shutdown wedges (:class:`ExitAfterUnrecoverable`);
- the consumer reconnects but takes no more messages (celery #8030, #8091, #10205): the
  worker is idle while messages wait in its queues (:class:`ConsumerWatchdog`).

Redelivery is not this module's business: S3 import tasks come back from the import ledger
(``tasks/ledger.py``), webhook events wait in their Redis Streams and are reclaimed by the
next drain (``ingest/webhooks/drain.py``), and a DLQ entry stays in the DLQ until its replay
succeeds. Kombu's visibility timeout remains the last resort for a message a dead worker held.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery.signals import worker_init, worker_ready

from tasks.base import runtime
from tasks.factory import queue_depths

__all__ = ["ConsumerWatchdog", "ExitAfterUnrecoverable", "StallClock"]

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
    _exit(f"worker still running {grace:.0f} s after an unrecoverable error: exiting")


def _exit(message: str) -> None:
    log.critical(message)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(1)


@dataclass
class StallClock:
    """How long a worker has been idle with messages waiting for it, without interruption.

    Any sign of life (a task running or reserved, or nothing waiting) starts the count again;
    so does a check that could not read the queues (the broker is away: reconnecting is
    Celery's job, and its own retries bound it).
    """

    limit: float
    since: float | None = None

    def observe(self, now: float, idle: bool, waiting: int | None) -> bool:
        """Record one check; True once the stall has lasted ``limit`` seconds."""
        if not idle or not waiting:
            self.since = None
            return False
        if self.since is None:
            self.since = now
        return now - self.since >= self.limit


class ConsumerWatchdog:
    """Exits the worker once it has been idle for ``limit`` seconds while messages wait.

    Idle means no task running and none reserved in this worker; waiting means the broker
    reports messages in a queue this worker consumes from. A healthy worker with a free
    process takes a waiting message within a second, so only a consumer that stopped reading
    (or a process pool that lost all its processes) stays idle that long. Its unacknowledged
    messages come back through the ledger and the streams (see the module's docstring).
    """

    def __init__(
        self,
        limit: float,
        queues: list[str],
        depths: Callable[[list[str]], dict[str, int]],
        busy: Callable[[], bool],
        interval: float | None = None,
    ) -> None:
        self.clock = StallClock(limit)
        self.queues = queues
        self.depths = depths
        self.busy = busy
        self.interval = interval if interval is not None else max(0.5, min(5.0, limit / 6))

    def check(self, now: float) -> str | None:
        """One check; the reason to exit, or None."""
        try:
            waiting = {q: n for q, n in self.depths(self.queues).items() if n}
        except Exception as exc:  # the broker is away: Celery reconnects on its own
            log.debug("consumer watchdog: queue depths unreadable: %s", exc)
            self.clock.observe(now, True, None)
            return None
        if not self.clock.observe(now, not self.busy(), sum(waiting.values())):
            return None
        queued = ", ".join(f"{n} in {q}" for q, n in sorted(waiting.items()))
        return (
            f"worker idle for {self.clock.limit:.0f} s while messages wait in its queues "
            f"({queued}): its consumer stopped taking messages; exiting for the supervisor "
            "to restart it (celery.consumerStallTimeout)"
        )

    def run_forever(self) -> None:
        while True:
            time.sleep(self.interval)
            reason = self.check(time.monotonic())
            if reason is not None:
                _exit(reason)


def _pool_busy() -> bool:
    from celery.worker import state

    return bool(state.active_requests or state.reserved_requests)


@worker_init.connect
def _exit_if_shutdown_wedges(**_: Any) -> None:
    logging.getLogger("celery.worker").addHandler(ExitAfterUnrecoverable())


@worker_ready.connect
def _watch_the_consumer(sender: Any = None, **_: Any) -> None:
    if sender is None:
        return
    settings = runtime().settings
    limit = settings.celery.consumer_stall_timeout
    if not limit:
        return
    consume_from = sender.app.amqp.queues.consume_from or sender.app.amqp.queues
    queues = sorted(consume_from)
    watchdog = ConsumerWatchdog(
        limit, queues, lambda names: queue_depths(settings, names), _pool_busy
    )
    log.info("consumer watchdog: exits after %d s idle with messages waiting in %s", limit, queues)
    threading.Thread(
        target=watchdog.run_forever, name="ingest-consumer-watchdog", daemon=True
    ).start()
