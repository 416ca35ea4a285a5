"""The base class of every task: one retry policy, dead-lettering on give-up, and the runtime."""

from __future__ import annotations

import logging
import random
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Task

from ingest.dlq import DeadLetterQueueFull
from ingest.errors import is_retryable
from ingest.observability.metrics import observe_task_dead_lettered
from ingest.runtime import Runtime, get_runtime

__all__ = ["IngestTask", "backoff_seconds", "runtime"]

log = logging.getLogger(__name__)
T = TypeVar("T")


# A retry limit never reached. Not None: ``Task.retry(max_retries=None)`` means the task's own
# limit (Celery's default of 3), after which retry() raises the error and the message is
# acknowledged as failed, which would drop work that is only waiting for room in the DLQ.
FOREVER = sys.maxsize


def runtime() -> Runtime:
    """This worker process's runtime (settings, Redis, S3, sink, DLQ), built on first use."""
    return get_runtime()


def backoff_seconds(retries: int, cap: float, base: float = 1.0) -> float:
    """Exponential backoff with full jitter: a random delay up to ``base * 2**retries``."""
    return random.uniform(0, min(cap, base * (2**retries)))


class IngestTask(Task):
    """Runs a unit of work with retries and backoff; gives it to a give-up handler at the end."""

    abstract = True

    def max_attempt_retries(self) -> int:
        settings = runtime().settings
        if self.name.startswith("ingest.s3."):
            return settings.s3csv.max_retries
        return settings.celery.max_retries

    def run_with_retries(
        self,
        work: Callable[[], T],
        on_give_up: Callable[[BaseException], T],
        on_blocked: Callable[[], None] | None = None,
    ) -> T:
        """Run ``work``; retry retryable errors with backoff, hand the rest to ``on_give_up``.

        ``on_blocked`` is told each time the work waits for room in a full DLQ."""
        try:
            return work()
        except Exception as exc:
            retries = self.request.retries
            if isinstance(exc, DeadLetterQueueFull):
                # The work's own rejects do not fit in the DLQ: giving up would only put the
                # task there instead. Wait for room, however long that takes (as below).
                log.error(
                    "task %s cannot dead-letter its rejects: %s; retrying later", self.name, exc
                )
                _tell(on_blocked)
                cap = runtime().settings.s3csv.retry_backoff_max
                raise self.retry(exc=exc, countdown=cap, max_retries=FOREVER) from exc
            if is_retryable(exc) and retries < self.max_attempt_retries():
                cap = runtime().settings.s3csv.retry_backoff_max
                countdown = getattr(exc, "retry_after", None) or backoff_seconds(retries, cap)
                log.warning(
                    "task %s failed (%s); retry %d in %.1fs", self.name, exc, retries + 1, countdown
                )
                # Our limit, not Celery's default of 3: past that, retry() would re-raise the
                # error and the task would fail without being dead-lettered.
                raise self.retry(
                    exc=exc, countdown=countdown, max_retries=self.max_attempt_retries()
                ) from exc
            log.error("task %s gave up after %d retries: %r", self.name, retries, exc)
            observe_task_dead_lettered(self.name)
            try:
                return on_give_up(exc)
            except DeadLetterQueueFull as full:
                # Nothing accepted may be dropped: the work stays queued until the DLQ has
                # room (an operator retries or purges entries), however long that takes.
                log.error("task %s cannot be dead-lettered: %s; retrying later", self.name, full)
                _tell(on_blocked)
                cap = runtime().settings.s3csv.retry_backoff_max
                raise self.retry(exc=full, countdown=cap, max_retries=FOREVER) from full

    def describe(self) -> dict[str, Any]:
        """What the DLQ keeps about this task run."""
        return {"taskName": self.name, "taskId": self.request.id, "retries": self.request.retries}


def _tell(on_blocked: Callable[[], None] | None) -> None:
    if on_blocked is None:
        return
    try:
        on_blocked()
    except Exception:  # Redis away: the stall bound starts with a later wait
        log.warning("could not record a wait for room in the DLQ", exc_info=True)
