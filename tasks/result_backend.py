"""Celery's Redis result backend, without result subscriptions where nobody can wait on one.

Sending a chord through the Redis backend builds a ``GroupResult`` of its header, whose ready
barrier subscribes the sending process to every header task's result channel and keeps a
strong reference to each result until that result arrives over the subscription. A worker
process never reads those subscriptions (it must not wait on results), so each chunk of an
import it dispatched left ``s3csv.fanoutChunk`` subscriptions and results behind for good, and
Redis kept publishing every range's result to a connection nobody read (its pub/sub output
buffer grows until Redis drops the client). Where Celery says a join would block (every
worker process, main and pool), :class:`WorkerRedisBackend` tracks no pending result; the
chord itself is unaffected (its counter and callback live in Redis).
"""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend
from celery.result import task_join_will_block

__all__ = ["BACKEND_CLASS", "WorkerRedisBackend"]

BACKEND_CLASS = f"{__name__}:WorkerRedisBackend"


class WorkerRedisBackend(RedisBackend):
    def add_pending_result(
        self, result: Any, weak: bool = False, start_drainer: bool = True
    ) -> Any:
        if task_join_will_block():
            return result
        return super().add_pending_result(result, weak=weak, start_drainer=start_drainer)
