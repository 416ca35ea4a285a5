"""The Prometheus metrics of every process, defined once, with labels held to bounded values.

Label values come from closed sets only: configured source names, the :class:`Reason` enum,
HTTP status codes, schema and task names; never an event key, import id or URL. Every metric
has labels, so its values are created on first use: a Celery worker can switch to
multiprocess mode after this module was imported (see :func:`use_multiprocess_values`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum
from functools import lru_cache
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics, values
from prometheus_client.metrics import MetricWrapperBase

__all__ = [
    "ALL_METRICS",
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


class Reason(StrEnum):
    """Why a webhook request got its answer: the only values of the ``reason`` label."""

    ACCEPTED = "accepted"  # 202
    DUPLICATE = "duplicate"  # 200, the key was already accepted
    MALFORMED = "malformed"  # 400, not JSON / not a batch
    INVALID_EVENT = "invalid_event"  # 400, fails the source's event schema
    BAD_SIGNATURE = "bad_signature"  # 401
    UNKNOWN_SOURCE = "unknown_source"  # 404
    IN_FLIGHT = "in_flight"  # 409
    TOO_LARGE = "too_large"  # 413
    UNSUPPORTED_MEDIA = "unsupported_media"  # 415
    KEY_REUSED = "key_reused"  # 422
    RATE_LIMITED = "rate_limited"  # 429
    BACKPRESSURE = "backpressure"  # 503, queue over its high-water mark
    UNAVAILABLE = "unavailable"  # 503, broker or Redis down
    OTHER = "other"


class EventOutcome(StrEnum):
    """What became of one webhook event: the values of the events counter's ``outcome``."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


# The reason a status code means when the handler did not name a finer one.
_REASON_BY_STATUS = {
    202: Reason.ACCEPTED,
    200: Reason.DUPLICATE,
    400: Reason.MALFORMED,
    401: Reason.BAD_SIGNATURE,
    404: Reason.UNKNOWN_SOURCE,
    409: Reason.IN_FLIGHT,
    413: Reason.TOO_LARGE,
    415: Reason.UNSUPPORTED_MEDIA,
    422: Reason.KEY_REUSED,
    429: Reason.RATE_LIMITED,
    503: Reason.UNAVAILABLE,
}

# ``*_created`` series only exist in single-process mode; without them both modes expose the
# same series, and scrapes stay smaller.
disable_created_metrics()

# Accept and pre-storage latencies live between 1 and 500 ms; the tail buckets catch queues.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

WEBHOOK_REQUESTS = Counter(
    "ingest_webhook_requests",
    "Webhook requests answered, by source, HTTP status and reason.",
    ["source", "status", "reason"],
)
WEBHOOK_EVENTS = Counter(
    "ingest_webhook_events",
    "Webhook events received, by source and outcome (accepted, duplicate, rejected).",
    ["source", "outcome"],
)
WEBHOOK_ACCEPT_LATENCY = Histogram(
    "ingest_webhook_accept_latency_seconds",
    "Time from a webhook request's arrival to its 202 (or duplicate 200) answer.",
    ["source"],
    buckets=LATENCY_BUCKETS,
)
WEBHOOK_PRE_STORAGE_LATENCY = Histogram(
    "ingest_webhook_pre_storage_latency_seconds",
    "Time from a webhook event's arrival in the web process to its write to the sink.",
    ["source"],
    buckets=LATENCY_BUCKETS,
)
WEBHOOK_BATCH_SIZE = Histogram(
    "ingest_webhook_batch_size_events",
    "Events per published webhook batch (one Celery message).",
    ["source"],
    buckets=BATCH_BUCKETS,
)
IMPORT_ROWS = Counter(
    "ingest_import_rows",
    "CSV rows processed by range tasks, by schema and outcome (stored, rejected, duplicate).",
    ["schema", "outcome"],
)
IMPORT_BYTES = Counter(
    "ingest_import_bytes",
    "CSV bytes processed by range tasks, by schema.",
    ["schema"],
)
IMPORT_RANGES = Counter(
    "ingest_import_ranges",
    "Range tasks finished, by schema and outcome (processed, resumed, failed).",
    ["schema", "outcome"],
)
TASK_RUNS = Counter(
    "ingest_task_runs",
    "Celery task runs, by task name and final state (SUCCESS, FAILURE, RETRY, ...).",
    ["task", "state"],
)
TASK_DURATION = Histogram(
    "ingest_task_duration_seconds",
    "Run time of Celery tasks, by task name.",
    ["task"],
    buckets=TASK_BUCKETS,
)
TASK_RETRIES = Counter("ingest_task_retries", "Celery task retries, by task name.", ["task"])
TASK_FAILURES = Counter(
    "ingest_task_failures", "Celery task runs that raised, by task name.", ["task"]
)
TASK_DEAD_LETTERED = Counter(
    "ingest_task_dead_lettered",
    "Task runs that used up their retries and handed their work to the DLQ, by task name.",
    ["task"],
)
HTTP_REQUESTS = Counter(
    "ingest_http_requests",
    "HTTP requests answered by the web process, by endpoint, method and status.",
    ["endpoint", "method", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "ingest_http_request_duration_seconds",
    "Time to answer HTTP requests, by endpoint.",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)

ALL_METRICS: tuple[MetricWrapperBase, ...] = (
    WEBHOOK_REQUESTS,
    WEBHOOK_EVENTS,
    WEBHOOK_ACCEPT_LATENCY,
    WEBHOOK_PRE_STORAGE_LATENCY,
    WEBHOOK_BATCH_SIZE,
    IMPORT_ROWS,
    IMPORT_BYTES,
    IMPORT_RANGES,
    TASK_RUNS,
    TASK_DURATION,
    TASK_RETRIES,
    TASK_FAILURES,
    TASK_DEAD_LETTERED,
    HTTP_REQUESTS,
    HTTP_REQUEST_DURATION,
)

# -- label values ----------------------------------------------------------------------------
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_TASK = re.compile(r"^(ingest|celery)\.[A-Za-z0-9_.]{1,80}$")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNKNOWN, OTHER = "unknown", "other"
_known_sources: frozenset[str] | None = None
# The configured names that are valid labels: the answer for them needs no pattern match.
_known_labels: frozenset[str] = frozenset()
# Labelled children by metric and label values. prometheus-client keeps them as well, but
# every ``labels()`` call validates its arguments and takes a lock first, and the web process
# makes several per request. Label values come from closed sets, so this stays small.
_children: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}


def _child(metric: MetricWrapperBase, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once per distinct set of values."""
    key = (metric, labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


def set_known_sources(names: Iterable[str] | None) -> None:
    """Name the configured webhook sources; any other name is labelled ``unknown``."""
    global _known_sources, _known_labels
    _known_sources = None if names is None else frozenset(names)
    _known_labels = frozenset(n for n in _known_sources or () if _NAME.match(n))


def source_label(name: str | None) -> str:
    """A configured source's name, else ``unknown`` (a URL must not mint new series)."""
    if name in _known_labels:
        return name
    if not name or not _NAME.match(name):
        return UNKNOWN
    if _known_sources is not None and name not in _known_sources:
        return UNKNOWN
    return name


def status_label(status: int | str) -> str:
    """An HTTP status code as a label value; anything that is not one is ``other``."""
    try:
        code = int(status)
    except (TypeError, ValueError):
        return OTHER
    return str(code) if 100 <= code <= 599 else OTHER


def reason_for_status(status: int) -> Reason:
    """The reason a webhook status code stands for when no finer one was given."""
    return _REASON_BY_STATUS.get(status, Reason.OTHER)


def _reason_label(reason: str | None, status: int) -> str:
    if reason is None:
        return reason_for_status(status).value
    if isinstance(reason, Reason):
        return reason.value
    try:
        return Reason(reason).value
    except ValueError:
        return Reason.OTHER.value


def _name_label(name: str | None) -> str:
    return name if name and _NAME.match(name) else OTHER


def _task_label(name: str | None) -> str:
    return name if name and _TASK.match(name) else OTHER


@lru_cache(maxsize=512)  # endpoint names are the app's routes: a small, fixed set
def endpoint_label(endpoint: str | None) -> str:
    """A Flask endpoint name (bounded by the routes); ``unmatched`` when no route matched."""
    return _name_label(endpoint) if endpoint else "unmatched"


# -- webhooks --------------------------------------------------------------------------------
def observe_webhook(
    source: str | None,
    status: int,
    reason: Reason | str | None = None,
    seconds: float | None = None,
) -> None:
    """Count one answered webhook request; ``seconds`` of a 202/200 go to the accept latency."""
    label = source_label(source)
    _child(WEBHOOK_REQUESTS, label, status_label(status), _reason_label(reason, status)).inc()
    if seconds is not None and status in (200, 202):
        _child(WEBHOOK_ACCEPT_LATENCY, label).observe(seconds)


def observe_webhook_events(source: str | None, outcome: EventOutcome | str, count: int = 1) -> None:
    """Count ``count`` webhook events of a source that ended as ``outcome``."""
    try:
        value = EventOutcome(outcome).value
    except ValueError:
        value = EventOutcome.REJECTED.value
    if count > 0:
        _child(WEBHOOK_EVENTS, source_label(source), value).inc(count)


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
    _child(HTTP_REQUESTS, label, verb, status_label(status)).inc()
    if seconds is not None:
        _child(HTTP_REQUEST_DURATION, label).observe(max(0.0, seconds))


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
        replacement = values.get_value_class()
        if replacement is values.MutexValue:
            return False  # the directory variable is not set
        values.ValueClass = replacement
    return True


# -- faults and readiness (issue 18) ---------------------------------------------------------
HTTP_UNHANDLED_ERRORS = Counter(
    "ingest_http_unhandled_errors",
    "Requests the web answered 500 because of a fault of its own (a bug), by endpoint.",
    ["endpoint"],
)
DEPENDENCY_UP = Gauge(
    "ingest_dependency_up",
    "1 when a dependency answered the last readiness probe, 0 when it did not (redis, sink).",
    ["dependency"],
    multiprocess_mode="mostrecent",
)
IMPORT_RANGES_REDISPATCHED = Counter(
    "ingest_import_ranges_redispatched",
    "Import ranges and scans the ledger sweeper sent again (lease expired, message lost).",
    ["kind"],
)
IMPORTS_CLOSED_BY_SWEEPER = Counter(
    "ingest_imports_closed_by_sweeper",
    "Imports the ledger sweeper brought to a final state, by status and why.",
    ["status", "reason"],
)
ALL_METRICS = (
    *ALL_METRICS,
    HTTP_UNHANDLED_ERRORS,
    DEPENDENCY_UP,
    IMPORT_RANGES_REDISPATCHED,
    IMPORTS_CLOSED_BY_SWEEPER,
)
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
