"""Celery signal handlers that give workers their logs, metrics, traces and error reporting.

The worker's main process sets up logging (``setup_logging``), then Sentry and ``/metrics`` on
``observability.workerMetricsPort`` with the multiprocess directory behind it (``celeryd_init``,
before the pool forks); each prefork child starts tracing (``worker_process_init``). Every task
run binds its ids into the log context and counts its outcome. Importing this module
connects the handlers; web and CLI processes import it too, for the sending side.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import Task, current_app, signals

from ingest.config import Settings
from ingest.observability import metrics
from ingest.observability.exposition import MetricsServer, scrape_registry, start_metrics_server
from ingest.observability.logs import (
    bind_log_context,
    clear_log_context,
    configure_logging,
    log_context,
)
from ingest.observability.metrics_dir import MetricsDir, active_metrics_dir, metrics_dir_for
from ingest.observability.tracing import configure_tracing, tracing_active
from ingest.runtime import get_runtime
from tasks.task_context import REQUEST_ID_HEADER, task_log_fields
from tasks.webhook_metrics import observe_published_batch, observe_stored_batch

__all__ = ["WorkerObservability", "instrument_celery", "start_tracing", "worker_observability"]

log = logging.getLogger(__name__)
SERVICE_NAME = "intelgraph-ingest-worker"


def _settings() -> Settings:
    found = getattr(current_app.conf, "ingest_settings", None)
    return found if isinstance(found, Settings) else get_runtime().settings


def instrument_celery() -> None:
    """Trace task publishing and running (once per process; needs tracing to be active)."""
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    instrumentor = CeleryInstrumentor()
    if tracing_active() and not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


class WorkerObservability:
    """What a worker's main process set up: its metrics directory and server."""

    def __init__(self, settings: Settings, hostname: str) -> None:
        self.settings, self.hostname = settings, hostname
        self.metrics_dir: MetricsDir | None = None
        self.server: MetricsServer | None = None

    def serve_metrics(self) -> None:
        """Bind the metrics port, then make the pool processes write to the directory it serves.

        The port comes first: a worker that finds it taken runs on without metrics, and
        leaves alone the directory of the worker that has it.
        """
        port = self.settings.observability.worker_metrics_port
        if not port or self.server is not None:
            return
        found = metrics_dir_for(self.settings.observability.metrics_dir, f"worker-{port}")
        self.server = start_metrics_server(port, scrape_registry(path=found.path))
        if self.server is None:
            found.cleanup()
            return
        found.clear()
        found.activate()
        self.metrics_dir = found
        # Task modules (and prometheus-client) were imported before any signal ran.
        metrics.use_multiprocess_values()
        log.info("worker metrics on port %d", port, extra={"worker": self.hostname})

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.metrics_dir is not None:
            self.metrics_dir.cleanup()


_worker: WorkerObservability | None = None


def worker_observability() -> WorkerObservability | None:
    """The main worker process's set-up, if this process is one."""
    return _worker


# -- the worker's main process ---------------------------------------------------------------
@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    # Connected at all, this replaces Celery's own logging set-up.
    obs = _settings().observability
    configure_logging(obs.log_level, obs.log_json)


@signals.celeryd_init.connect
def _worker_starting(sender: Any = None, **_: Any) -> None:
    global _worker
    from sentry_sdk.integrations.celery import CeleryIntegration

    from ingest.observability.error_reporting import init_error_reporting

    settings = _settings()
    metrics.set_known_sources(settings.http.sources)
    init_error_reporting(settings.observability.sentry_dsn, [CeleryIntegration()])
    _worker = WorkerObservability(settings, str(sender))
    # Before the pool forks, so that every child writes its metrics to the shared directory.
    _worker.serve_metrics()


@signals.worker_init.connect
def _worker_init(sender: Any = None, **_: Any) -> None:
    log_hashing_backend()
    # Without prefork children (solo, threads, gevent pools) tasks run in this process.
    if "prefork" not in str(getattr(sender, "pool_cls", "prefork")).lower():
        start_tracing()


@signals.worker_shutdown.connect
def _worker_stopping(**_: Any) -> None:
    if _worker is not None:
        _worker.stop()


def log_hashing_backend() -> None:
    """Say at start whether the compiled ``ingest._speedups`` is there: it is worth about
    3 ms of CPU per MB of CSV, and a build without a C compiler silently goes without it."""
    from ingest.hashing import NATIVE_BACKEND

    if NATIVE_BACKEND is not None:
        log.info("content hashing: compiled ingest._speedups (%s)", NATIVE_BACKEND)
    else:
        log.warning(
            "content hashing: ingest._speedups is not built, using polars-hash and numpy "
            "(same results, about 3 ms more CPU per MB of CSV); install gcc and the Python "
            "headers, then reinstall the package"
        )


# -- prefork children ------------------------------------------------------------------------
def start_tracing(service_name: str = SERVICE_NAME) -> bool:
    """Start tracing (when OTEL_* asks for it) with task publishing and runs traced."""
    if not configure_tracing(service_name):
        return False
    instrument_celery()
    return True


@signals.worker_process_init.connect
def _child_starting(**_: Any) -> None:
    # Span processors' threads do not survive a fork: each child starts its own.
    start_tracing()


@signals.worker_process_shutdown.connect
def _child_stopping(pid: int | None = None, **_: Any) -> None:
    if active_metrics_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())


# -- every task run --------------------------------------------------------------------------
_started: dict[str, float] = {}


@signals.task_prerun.connect
def _task_starting(
    task_id: str | None = None,
    task: Task | None = None,
    args: Any = None,
    kwargs: Any = None,
    **_: Any,
) -> None:
    clear_log_context()
    if task is None:
        return
    request_id = getattr(task.request, REQUEST_ID_HEADER, None)
    bind_log_context(
        task_id=task_id,
        task_name=task.name,
        request_id=request_id if isinstance(request_id, str) else None,
        **task_log_fields(task, args or (), kwargs or {}),
    )
    if task_id:
        _started[task_id] = time.perf_counter()


@signals.task_postrun.connect
def _task_finished(
    task_id: str | None = None,
    task: Task | None = None,
    args: Any = None,
    retval: Any = None,
    state: str | None = None,
    **_: Any,
) -> None:
    started = _started.pop(task_id, None) if task_id else None
    seconds = time.perf_counter() - started if started is not None else None
    name = getattr(task, "name", None)
    metrics.observe_task_run(name, state, seconds)
    observe_stored_batch(name, args, state, retval)
    clear_log_context()


@signals.task_retry.connect
def _task_retrying(sender: Task | None = None, **_: Any) -> None:
    metrics.observe_task_retry(getattr(sender, "name", None))


@signals.task_failure.connect
def _task_failed(sender: Task | None = None, **_: Any) -> None:
    metrics.observe_task_failure(getattr(sender, "name", None))


# -- publishing ------------------------------------------------------------------------------
@signals.before_task_publish.connect
def _publishing(
    sender: Any = None, body: Any = None, headers: dict[str, Any] | None = None, **_: Any
) -> None:
    # An import started by a request keeps that request's id in every task it leads to.
    request_id = log_context().get("request_id")
    if headers is not None and request_id and REQUEST_ID_HEADER not in headers:
        headers[REQUEST_ID_HEADER] = request_id
    observe_published_batch(sender, body)
