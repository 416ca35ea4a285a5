"""Serving metrics: the scrape registry of a process, queue depths read at scrape time, and the
worker's small HTTP server."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from ingest.observability.metrics_dir import active_metrics_dir

__all__ = [
    "CONTENT_TYPE",
    "MetricsServer",
    "QueueDepthCollector",
    "render",
    "scrape_registry",
    "start_metrics_server",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
log = logging.getLogger(__name__)


class _ProcessMetrics(Collector):
    """This process's own metrics (single-process mode: the default registry)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def scrape_registry(
    extra: Sequence[Collector] = (), path: str | Path | None = None
) -> CollectorRegistry:
    """A registry over every process's metrics (multiprocess mode: ``path`` or the active
    directory) or this process's own, plus ``extra``."""
    registry = CollectorRegistry(auto_describe=False)
    path = path or active_metrics_dir()
    if path:
        MultiProcessCollector(registry, path=path)
    else:
        registry.register(_ProcessMetrics())
    for collector in extra:
        registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of ``registry``."""
    return generate_latest(registry)


class QueueDepthCollector(Collector):
    """Broker queue depths and the DLQ depth, read when scraped.

    ``queue_depths`` asks the broker (the web passes one that uses the broker's own API,
    ``queue_declare(passive=True)``, see ``tasks.factory.queue_depths``). Readings are kept
    ``max_age`` seconds, so scrapes of several Prometheus servers, or of every gunicorn worker,
    cost one reading per interval. A failed reading (Redis or the broker down) yields
    ``ingest_queue_stats_up 0`` instead of failing the whole scrape.
    """

    def __init__(
        self,
        queue_depths: Callable[[], Mapping[str, int]],
        dlq_depth: Callable[[], int],
        max_age: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        webhook_backlog: Callable[[], int] | None = None,
    ) -> None:
        self._queue_depths, self._dlq_depth = queue_depths, dlq_depth
        self._webhook_backlog = webhook_backlog
        self._max_age, self._clock = max_age, clock
        self._lock = threading.Lock()
        self._reading: tuple[float, dict[str, int], int] | None = None
        self._waiting: int | None = None

    def _read(self) -> tuple[dict[str, int], int]:
        per_queue = dict(self._queue_depths())
        if self._webhook_backlog is not None:
            self._waiting = self._webhook_backlog()
        return per_queue, self._dlq_depth()

    def readings(self) -> tuple[dict[str, int], int]:
        """Messages per queue and DLQ entries, at most ``max_age`` seconds old."""
        with self._lock:
            now = self._clock()
            if self._reading is None or now - self._reading[0] >= self._max_age:
                per_queue, dlq = self._read()
                self._reading = (now, per_queue, dlq)
            return self._reading[1], self._reading[2]

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "ingest_queue_stats_up", "1 when the queue depths below were read from Redis."
        )
        try:
            per_queue, dlq = self.readings()
        except Exception as exc:  # Redis or the broker down: the rest of the scrape still works
            log.warning("reading queue depths for /metrics failed: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily(
            "ingest_queue_messages", "Messages waiting in a Celery queue.", labels=["queue"]
        )
        for queue, count in per_queue.items():
            depth.add_metric([queue], count)
        yield depth
        yield GaugeMetricFamily("ingest_dlq_entries", "Entries in the dead-letter queue.", dlq)
        if self._waiting is not None:
            yield GaugeMetricFamily(
                "ingest_webhook_events_waiting",
                "Accepted webhook events not yet stored (in the sources' streams).",
                self._waiting,
            )


class MetricsServer:
    """A running metrics HTTP server; :meth:`stop` closes its socket."""

    def __init__(self, server: Any, thread: threading.Thread, port: int) -> None:
        self._server, self._thread, self.port = server, thread, port

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()


def start_metrics_server(
    port: int, registry: CollectorRegistry, addr: str = "0.0.0.0"
) -> MetricsServer | None:
    """Serve ``registry`` on ``port`` in a thread; None (and a warning) when it cannot bind."""
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        # Another worker on this host has the port: this one runs on without a /metrics.
        log.warning(
            "worker metrics not served: port %d is unavailable (%s); give each worker on a "
            "host its own INGEST_OBSERVABILITY__WORKER_METRICS_PORT",
            port,
            exc.strerror or exc,
        )
        return None
    return MetricsServer(server, thread, port)
