"""``GET /metrics``: every gunicorn worker's metrics (multiprocess mode) plus queue depths."""

from __future__ import annotations

import os
from typing import cast

from flask import Blueprint, Response, current_app
from prometheus_client import CollectorRegistry

from ingest.observability.exposition import (
    CONTENT_TYPE,
    QueueDepthCollector,
    render,
    scrape_registry,
)
from ingest.observability.metrics import BUFFER
from ingest.runtime import Runtime
from ingest.s3csv.watch_status import WatchCollector
from ingest.webhooks.stream import waiting_key
from tasks.factory import queue_depths
from tasks.names import ALL_QUEUES
from webapp.context import runtime

__all__ = ["bp"]

bp = Blueprint("metrics", __name__)
_EXTENSION = "ingest.metrics_registry"
QUEUE_STATS_MAX_AGE = 5.0


def _queue_collector(rt: Runtime) -> QueueDepthCollector:
    return QueueDepthCollector(
        lambda: queue_depths(rt.settings, ALL_QUEUES),
        lambda: rt.dlq.depth(),
        max_age=QUEUE_STATS_MAX_AGE,
        webhook_backlog=lambda: _webhook_backlog(rt),
    )


def _webhook_backlog(rt: Runtime) -> int:
    """Events accepted and not yet stored, over every configured source (the counters the
    accept scripts add to and the drains take from: a batch request's entry holds many)."""
    sources = list(rt.settings.http.sources)
    if not sources:
        return 0
    counts = rt.redis.mget([waiting_key(source) for source in sources])
    return sum(int(n) for n in counts if n is not None)


def _registry() -> CollectorRegistry:
    # One registry per process: the queue-depth cache is shared by this worker's scrapes.
    extensions = current_app.extensions
    found = extensions.get(_EXTENSION)
    if found is None or found[0] != os.getpid():
        rt = runtime()
        configured = rt.settings.s3csv.watches
        watches = WatchCollector(
            lambda: rt.redis, [w.name for w in configured], [w.queue_url for w in configured]
        )
        registry = scrape_registry([_queue_collector(rt), watches])
        found = extensions[_EXTENSION] = (os.getpid(), registry)
    return cast(CollectorRegistry, found[1])


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition of the web process (all its workers) and the queues."""
    BUFFER.flush()  # this worker's own figures are current; the others' at most 1 s late
    return Response(render(_registry()), content_type=CONTENT_TYPE)
