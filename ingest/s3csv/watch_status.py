"""What operators see of watches and imports: the watches' state, the import list, metrics.

``GET /admin/watches``, ``ingest watches`` and ``/metrics`` read the same counters, which the
pollers keep in Redis, so every web process and every CLI sees the whole system.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ingest.config import Settings
from ingest.s3csv.imports import IMPORT_STATUSES, ImportRequestError
from ingest.s3csv.watches import WatchStats

__all__ = ["MAX_LIST_LIMIT", "WatchCollector", "listing_query", "watch_overview"]

log = logging.getLogger(__name__)
MAX_LIST_LIMIT = 1000
_WATCH_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def watch_overview(settings: Settings, client: redis.Redis) -> list[dict[str, Any]]:
    """Each configured watch: what it accepts and its counters (see docs/s3-import.md)."""
    overview = []
    for watch in settings.s3csv.watches:
        overview.append(
            {
                "name": watch.name,
                "queueUrl": watch.queue_url,
                "bucket": watch.bucket,
                "prefix": watch.prefix,
                "schema": watch.schema_name,
                "polled": settings.s3csv.poll_watches,
                **WatchStats(client, watch.name).read(),
            }
        )
    return overview


def listing_query(
    status: str | None, watch: str | None, limit: str | int | None
) -> tuple[str | None, str | None, int]:
    """Check the filters of the import list; a bad value is a 400 that says what is allowed."""
    status = status or None
    if status is not None and status not in IMPORT_STATUSES:
        raise ImportRequestError(f"status must be one of {', '.join(IMPORT_STATUSES)}")
    watch = watch or None
    if watch is not None and not _WATCH_NAME.match(watch):
        raise ImportRequestError("watch must be a watch name (letters, digits, _ . -)")
    if limit is None or limit == "":
        return status, watch, 50
    try:
        number = int(limit)
    except ValueError:
        number = 0
    if str(limit).strip() != str(number) or not 1 <= number <= MAX_LIST_LIMIT:
        raise ImportRequestError(f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}")
    return status, watch, number


class WatchCollector(Collector):
    """The watches' counters as Prometheus metrics, read from Redis when scraped."""

    COUNTERS = {
        "importsStarted": ("ingest_watch_imports_started", "Imports started by a watch."),
        "messagesReceived": ("ingest_watch_messages_received", "SQS messages received."),
        "messagesRefused": (
            "ingest_watch_messages_refused",
            "Messages with an object outside the watch's bucket, prefix or allowedBuckets.",
        ),
        "malformed": (
            "ingest_watch_messages_malformed",
            "Messages that are not S3 notifications (sent to the DLQ).",
        ),
        "duplicates": (
            "ingest_watch_duplicate_objects",
            "Object versions notified again: nothing new started.",
        ),
    }

    def __init__(
        self, client: Callable[[], redis.Redis], watches: list[str], queues: list[str] | None = None
    ) -> None:
        self._client, self._watches = client, watches
        self._queues = dict(zip(watches, queues or [""] * len(watches), strict=True))

    def collect(self) -> Iterator[Metric]:
        if not self._watches:
            return
        try:
            readings = {w: WatchStats(self._client(), w).read() for w in self._watches}
        except (redis.RedisError, OSError) as exc:
            log.warning("reading watch counters for /metrics failed: %s", exc)
            return
        for field, (name, text) in self.COUNTERS.items():
            family = CounterMetricFamily(name, text, labels=["watch"])
            for watch, stats in readings.items():
                family.add_metric([watch], stats[field])
            yield family
        lag = GaugeMetricFamily(
            "ingest_watch_lag_seconds",
            "How long the oldest message of the last receive waited in the queue.",
            labels=["watch"],
        )
        backlog = GaugeMetricFamily(
            "ingest_watch_backlog_messages",
            "Messages waiting in the watch's queue (SQS's approximate count).",
            labels=["watch"],
        )
        for watch, stats in readings.items():
            if stats["lagSeconds"] is not None:
                lag.add_metric([watch], stats["lagSeconds"])
            if stats["backlog"] is not None:
                backlog.add_metric([watch], stats["backlog"])
        yield lag
        yield backlog
        yield self._last_message(readings)
        info = GaugeMetricFamily(
            "ingest_watch_info",
            "A configured watch and its queue (always 1).",
            labels=["watch", "queue"],
        )
        for watch in readings:
            info.add_metric([watch, self._queues.get(watch, "")], 1)
        yield info

    @staticmethod
    def _last_message(readings: dict[str, dict[str, Any]]) -> Metric:
        last = GaugeMetricFamily(
            "ingest_watch_last_message_timestamp_seconds",
            "When a poller of the watch last received a message (Unix time).",
            labels=["watch"],
        )
        for watch, stats in readings.items():
            if stats["lastMessageAt"]:
                moment = datetime.fromisoformat(stats["lastMessageAt"].replace("Z", "+00:00"))
                last.add_metric([watch], moment.timestamp())
        return last
