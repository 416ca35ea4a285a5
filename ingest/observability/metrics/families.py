"""The metric families, each defined once, and the closed sets of values their labels take."""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.metrics import MetricWrapperBase


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
