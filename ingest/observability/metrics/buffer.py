"""Metric updates gathered in memory and written to the metric files about once a second.

In multiprocess mode every update of a counter or histogram takes a lock, checks the process
id and writes an mmap'ed file; a webhook answer makes seven of them. A gunicorn gevent worker
serves every request on one OS thread, so its updates can be added up in plain dictionaries
instead, and written in one pass: :meth:`MetricBuffer.flush`, run once a second, before this
process serves ``/metrics`` and when the worker exits. Another process's scrape sees this
one's figures at most a flush interval late; a worker killed with SIGKILL loses at most that
interval's updates.

Buffering is off until :meth:`MetricBuffer.enable` is called (the web's gunicorn hook does,
in gevent workers only): then updates pass straight through, as in every other process.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

__all__ = ["BUFFER", "MetricBuffer"]


class MetricBuffer:
    """Pending counter increments and histogram observations, by metric child.

    Not thread-safe by design: enable it only where one OS thread makes every update (a
    gevent worker's greenlets cannot switch inside :meth:`inc` or :meth:`observe`).
    """

    def __init__(self) -> None:
        self._enabled = False
        self._counts: dict[Any, float] = {}
        # histogram child -> [sum of values, count per bucket, the bucket bounds]
        self._observed: dict[Any, list[Any]] = {}

    def enable(self) -> None:
        self._enabled = True

    def disable(self) -> None:
        """Write what is pending and pass later updates straight through."""
        self._enabled = False
        self.flush()

    def inc(self, child: Any, amount: float = 1.0) -> None:
        """``child.inc(amount)``, now or at the next flush."""
        if not self._enabled:
            child.inc(amount)
            return
        counts = self._counts
        counts[child] = counts.get(child, 0.0) + amount

    def observe(self, child: Any, value: float) -> None:
        """``child.observe(value)`` of a histogram child, now or at the next flush."""
        if not self._enabled:
            child.observe(value)
            return
        found = self._observed.get(child)
        if found is None:
            bounds = getattr(child, "_upper_bounds", None)
            if bounds is None:  # not prometheus-client's histogram as this module knows it
                child.observe(value)
                return
            found = self._observed[child] = [0.0, [0] * len(bounds), bounds]
        found[0] += value
        # As Histogram.observe: the first bucket whose upper bound is >= value (+Inf is last).
        found[1][bisect_left(found[2], value)] += 1

    def flush(self) -> None:
        """Write every pending update to its metric."""
        counts, self._counts = self._counts, {}
        observed, self._observed = self._observed, {}
        for child, amount in counts.items():
            child.inc(amount)
        for child, (total, per_bucket, _) in observed.items():
            child._sum.inc(total)
            for bucket, count in zip(child._buckets, per_bucket, strict=True):
                if count:
                    bucket.inc(count)


BUFFER = MetricBuffer()
