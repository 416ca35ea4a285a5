"""Backpressure: the depth of a broker queue in Redis, read at most once per interval per process.

kombu's Redis transport keeps a queue as a list named after it, plus one list per priority
step (``<queue>\\x06\\x16<priority>`` for 3, 6 and 9) when messages carry a priority; the
depth is the sum of all of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import redis

__all__ = ["QueueDepthGauge", "kombu_queue_lists"]

# kombu.transport.redis: PRIORITY_STEPS and the separator of priority sub-queues.
_PRIORITY_STEPS = (3, 6, 9)
_PRIORITY_SEP = "\x06\x16"


def kombu_queue_lists(queue: str) -> list[str]:
    """The Redis lists that hold the messages of kombu queue ``queue``."""
    return [queue, *(f"{queue}{_PRIORITY_SEP}{step}" for step in _PRIORITY_STEPS)]


class QueueDepthGauge:
    """The number of messages waiting in a queue, cached for ``max_age`` seconds.

    Concurrent callers share one refresh: while one reads Redis, the others get the cached
    value, so a burst of requests costs one round trip per interval, not one each.
    """

    def __init__(
        self,
        client: redis.Redis,
        queue: str,
        max_age: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._lists = kombu_queue_lists(queue)
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._depth = 0
        self._read_at: float | None = None

    def depth(self) -> int:
        """The queue's depth, at most ``max_age`` seconds old; Redis errors propagate."""
        read_at = self._read_at
        if read_at is not None and self._clock() - read_at < self._max_age:
            return self._depth
        if read_at is not None and not self._lock.acquire(blocking=False):
            return self._depth  # another caller is refreshing; its answer is fresh enough
        if read_at is None:
            self._lock.acquire()
        try:
            pipe = self._client.pipeline(transaction=False)
            for name in self._lists:
                pipe.llen(name)
            self._depth = sum(int(n) for n in pipe.execute())
            self._read_at = self._clock()
            return self._depth
        finally:
            self._lock.release()

    def over(self, high_water_mark: int) -> bool:
        """Whether more than ``high_water_mark`` messages are waiting."""
        return self.depth() > high_water_mark
