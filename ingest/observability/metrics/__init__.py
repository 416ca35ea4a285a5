"""The Prometheus metrics of every process, defined once, with labels held to bounded values.

Label values come from closed sets only: configured source names, the :class:`Reason` enum,
HTTP status codes, schema and task names; never an event key, import id or URL. Every metric
has labels, so its values are created on first use: a Celery worker can switch to
multiprocess mode after this module was imported (see :func:`use_multiprocess_values`).
"""

from __future__ import annotations

import os

from prometheus_client import values

from ingest.observability.metrics.buffer import BUFFER
from ingest.observability.metrics.families import (
    ALL_METRICS,
    DEPENDENCY_UP,
    HTTP_REQUEST_DURATION,
    HTTP_REQUESTS,
    HTTP_UNHANDLED_ERRORS,
    IMPORT_BYTES,
    IMPORT_RANGES,
    IMPORT_RANGES_REDISPATCHED,
    IMPORT_ROWS,
    IMPORTS_CLOSED_BY_SWEEPER,
    TASK_DEAD_LETTERED,
    TASK_DURATION,
    TASK_FAILURES,
    TASK_RETRIES,
    TASK_RUNS,
    WEBHOOK_ACCEPT_LATENCY,
    WEBHOOK_BATCH_SIZE,
    WEBHOOK_EVENTS,
    WEBHOOK_PRE_STORAGE_LATENCY,
    WEBHOOK_REQUESTS,
    EventOutcome,
    Reason,
)
from ingest.observability.metrics.labels import (
    _METHODS,
    OTHER,
    _child,
    _name_label,
    _reason_label,
    _task_label,
    endpoint_label,
    reason_for_status,
    set_known_sources,
    source_label,
    status_label,
)

__all__ = [
    "ALL_METRICS",
    "BUFFER",
    "HTTP_REQUESTS",
    "HTTP_REQUEST_DURATION",
    "IMPORT_BYTES",
    "IMPORT_RANGES",
    "IMPORT_ROWS",
    "TASK_DEAD_LETTERED",
    "TASK_DURATION",
    "TASK_FAILURES",
    "TASK_RETRIES",
    "TASK_RUNS",
    "WEBHOOK_ACCEPT_LATENCY",
    "WEBHOOK_BATCH_SIZE",
    "WEBHOOK_EVENTS",
    "WEBHOOK_PRE_STORAGE_LATENCY",
    "WEBHOOK_REQUESTS",
    "EventOutcome",
    "Reason",
    "current_pid",
    "endpoint_label",
    "observe_accept_latency",
    "observe_batch",
    "observe_http_request",
    "observe_import_range",
    "observe_pre_storage_latency",
    "observe_task_dead_lettered",
    "observe_task_failure",
    "observe_task_retry",
    "observe_task_run",
    "observe_webhook",
    "observe_webhook_events",
    "reason_for_status",
    "set_known_sources",
    "source_label",
    "status_label",
    "use_multiprocess_values",
]
__all__ += [
    "DEPENDENCY_UP",
    "HTTP_UNHANDLED_ERRORS",
    "IMPORTS_CLOSED_BY_SWEEPER",
    "IMPORT_RANGES_REDISPATCHED",
    "observe_dependency",
    "observe_import_closed_by_sweeper",
    "observe_redispatch",
    "observe_unhandled_error",
]


# -- webhooks --------------------------------------------------------------------------------
def observe_webhook(
    source: str | None,
    status: int,
    reason: Reason | str | None = None,
    seconds: float | None = None,
) -> None:
    """Count one answered webhook request; ``seconds`` of a 202/200 go to the accept latency."""
    label = source_label(source)
    BUFFER.inc(_child(WEBHOOK_REQUESTS, label, status_label(status), _reason_label(reason, status)))
    if seconds is not None and status in (200, 202):
        BUFFER.observe(_child(WEBHOOK_ACCEPT_LATENCY, label), seconds)


def observe_webhook_events(source: str | None, outcome: EventOutcome | str, count: int = 1) -> None:
    """Count ``count`` webhook events of a source that ended as ``outcome``."""
    try:
        value = EventOutcome(outcome).value
    except ValueError:
        value = EventOutcome.REJECTED.value
    if count > 0:
        BUFFER.inc(_child(WEBHOOK_EVENTS, source_label(source), value), count)


def observe_accept_latency(source: str | None, seconds: float) -> None:
    """Record the time from a webhook request's arrival to its acceptance."""
    WEBHOOK_ACCEPT_LATENCY.labels(source_label(source)).observe(max(0.0, seconds))


def observe_pre_storage_latency(source: str | None, seconds: float) -> None:
    """Record the time from a webhook event's arrival to its write to the sink."""
    WEBHOOK_PRE_STORAGE_LATENCY.labels(source_label(source)).observe(max(0.0, seconds))


def observe_batch(source: str | None, size: int) -> None:
    """Record the number of events in one published webhook batch."""
    WEBHOOK_BATCH_SIZE.labels(source_label(source)).observe(size)


# -- imports ---------------------------------------------------------------------------------
def observe_import_range(
    schema: str,
    *,
    bytes_read: int,
    stored: int,
    rejected: int,
    duplicates: int,
    resumed: bool = False,
    failed: bool = False,
) -> None:
    """Count one finished range task; resumed ranges did their work before and add no rows."""
    label = _name_label(schema)
    if failed:
        IMPORT_RANGES.labels(label, "failed").inc()
        return
    if resumed:
        IMPORT_RANGES.labels(label, "resumed").inc()
        return
    IMPORT_RANGES.labels(label, "processed").inc()
    IMPORT_BYTES.labels(label).inc(max(0, bytes_read))
    for outcome, count in (("stored", stored), ("rejected", rejected), ("duplicate", duplicates)):
        if count > 0:
            IMPORT_ROWS.labels(label, outcome).inc(count)


# -- tasks -----------------------------------------------------------------------------------
def observe_task_run(task: str | None, state: str | None, seconds: float | None) -> None:
    """Count one finished task run and its run time."""
    label = _task_label(task)
    TASK_RUNS.labels(label, _name_label(state)).inc()
    if seconds is not None:
        TASK_DURATION.labels(label).observe(max(0.0, seconds))


def observe_task_retry(task: str | None) -> None:
    """Count one retry of a task."""
    TASK_RETRIES.labels(_task_label(task)).inc()


def observe_task_failure(task: str | None) -> None:
    """Count one task run that raised."""
    TASK_FAILURES.labels(_task_label(task)).inc()


def observe_task_dead_lettered(task: str | None) -> None:
    """Count one task run that gave up and dead-lettered its work."""
    TASK_DEAD_LETTERED.labels(_task_label(task)).inc()


# -- HTTP ------------------------------------------------------------------------------------
def observe_http_request(
    endpoint: str | None, method: str, status: int, seconds: float | None
) -> None:
    """Count one answered HTTP request of the web process, and its duration."""
    label = endpoint_label(endpoint)
    verb = method if method in _METHODS else method.upper()
    verb = verb if verb in _METHODS else OTHER
    BUFFER.inc(_child(HTTP_REQUESTS, label, verb, status_label(status)))
    if seconds is not None:
        BUFFER.observe(_child(HTTP_REQUEST_DURATION, label), max(0.0, seconds))


# -- multiprocess mode -----------------------------------------------------------------------
def use_multiprocess_values() -> bool:
    """Make metric values created from now on live in ``PROMETHEUS_MULTIPROC_DIR`` files.

    prometheus-client picks its value class when it is imported, but both servers load it
    before they know their directory: gunicorn's master imports the app package with its
    config, and a Celery worker imports its tasks before any worker signal runs. So they set
    ``PROMETHEUS_MULTIPROC_DIR`` and then swap the class. That is safe because every metric
    here is labelled: no value exists until a forked worker process uses one. Returns whether
    values are now multiprocess ones.
    """
    if values.ValueClass is values.MutexValue:
        if values.get_value_class() is values.MutexValue:
            return False  # the directory variable is not set
        # Every value update checks the process id against its file's; a cached id, renewed
        # in a forked child, spares a getpid() system call per update (seven per webhook).
        values.ValueClass = values.MultiProcessValue(process_identifier=current_pid)
    return True


_pid = os.getpid()


def current_pid() -> int:
    """``os.getpid()``, cached, and renewed in every forked child."""
    return _pid


def _renew_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_renew_pid)


def observe_unhandled_error(endpoint: str | None) -> None:
    """Count one request answered 500 by a fault of the service."""
    HTTP_UNHANDLED_ERRORS.labels(endpoint_label(endpoint)).inc()


def observe_dependency(name: str, up: bool) -> None:
    """Record whether dependency ``name`` (``redis``, ``sink``) answered its probe."""
    DEPENDENCY_UP.labels(_name_label(name)).set(1 if up else 0)


def observe_redispatch(kind: str, count: int = 1) -> None:
    """Count ranges (``range``) or scans (``scan``) the ledger sweeper sent again."""
    IMPORT_RANGES_REDISPATCHED.labels(_name_label(kind)).inc(count)


def observe_import_closed_by_sweeper(status: str, reason: str) -> None:
    """Count an import the sweeper closed: ``completed`` (no chord callback ran) or ``stalled``."""
    IMPORTS_CLOSED_BY_SWEEPER.labels(_name_label(status), _name_label(reason)).inc()
