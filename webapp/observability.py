"""Logs, metrics, traces and error reporting of the web app, installed by :func:`init_app`.

Every request gets a request id (``X-Request-ID`` when the client sent a usable one, else a
new one), bound into its log lines and echoed in the answer. Every answer is counted; answers
of the webhook endpoints also by source, status and reason (see :func:`note_webhook_reason`).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time

from flask import Flask, Response, current_app, g, request

from ingest.config import Settings
from ingest.observability import metrics
from ingest.observability.error_reporting import init_error_reporting
from ingest.observability.logs import bind_log_context, clear_log_context, configure_logging
from ingest.observability.metrics import EventOutcome, Reason
from webapp import metrics as metrics_endpoint

__all__ = ["REQUEST_ID_HEADER", "init_app", "note_batch_statuses", "note_webhook_reason"]

REQUEST_ID_HEADER = "X-Request-ID"
SERVICE_NAME = "intelgraph-ingest-web"
WEBHOOK_BLUEPRINT = "webhooks"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
# Polled by load balancers and Prometheus: neither logged nor traced.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_OUTCOMES = frozenset(o.value for o in EventOutcome)
_WEBHOOK_ENDPOINTS = f"{WEBHOOK_BLUEPRINT}."
# Successful webhook answers come thousands a second and say nothing the metrics do not: one
# in this many (``observability.webhookAccessLogSample``) gets an access line, marked
# ``sampled_one_in``; every other answer gets one.
WEBHOOK_ACCESS_LOG_SAMPLE = 100
_SAMPLE_KEY = "ingest.access_log_sample"
_webhook_successes = itertools.count()
access_log = logging.getLogger("ingest.access")


def note_webhook_reason(reason: Reason | str) -> None:
    """Name why this webhook request is answered as it is, where the status alone is ambiguous
    (503 ``backpressure`` vs ``unavailable``, 400 ``invalid_event`` vs ``malformed``)."""
    g.ingest_webhook_reason = reason


def note_batch_statuses(statuses: dict[str, int], duplicates: int = 0) -> None:
    """Hand the events counter a batch answer's per-event statuses (count by status), so that
    it need not parse the answer's JSON again; ``duplicates``: a retried batch's results."""
    counted: dict[EventOutcome, int] = {}
    for status, count in statuses.items():
        outcome = EventOutcome(status) if status in _OUTCOMES else EventOutcome.REJECTED
        counted[outcome] = counted.get(outcome, 0) + count
    if duplicates:
        counted[EventOutcome.DUPLICATE] = counted.get(EventOutcome.DUPLICATE, 0) + duplicates
    g.ingest_batch_outcomes = counted


def _request_id() -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    # 32 random hex digits, as uuid4().hex gives, for a fifth of its cost.
    return given if _REQUEST_ID.match(given) else os.urandom(16).hex()


def _webhook_source() -> str | None:
    endpoint, view_args = request.endpoint, request.view_args
    if endpoint is None or not endpoint.startswith(_WEBHOOK_ENDPOINTS) or not view_args:
        return None
    return metrics.source_label(str(view_args.get("source", "")))


def _event_outcomes(response: Response) -> dict[EventOutcome, int]:
    """How many events of this webhook answer were accepted, duplicates or rejected."""
    status = response.status_code
    if request.endpoint != f"{WEBHOOK_BLUEPRINT}.receive_batch":
        if status == 202:
            return {EventOutcome.ACCEPTED: 1}
        return {EventOutcome.DUPLICATE if status == 200 else EventOutcome.REJECTED: 1}
    if status not in (200, 202):
        return {}  # refused as a whole before its events were counted; the request counts
    noted = g.get("ingest_batch_outcomes")
    if noted is not None:  # counted by the view as it built the answer
        return dict(noted)
    body = response.get_json(silent=True)
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list):
        return {}
    if status == 200:  # a retried batch request: every event is a duplicate
        return {EventOutcome.DUPLICATE: len(results)}
    counted: dict[EventOutcome, int] = {}
    for result in results:
        found = result.get("status") if isinstance(result, dict) else None
        outcome = EventOutcome(found) if found in _OUTCOMES else EventOutcome.REJECTED
        counted[outcome] = counted.get(outcome, 0) + 1
    return counted


def _start_request() -> None:
    g.ingest_started = time.perf_counter()
    g.ingest_request_id = _request_id()
    g.ingest_source = _webhook_source()
    clear_log_context()
    bind_log_context(request_id=g.ingest_request_id, source=g.ingest_source)


def _finish_request(response: Response) -> Response:
    request_id = g.get("ingest_request_id")
    if request_id is None:  # a failure before our before_request ran
        return response
    response.headers[REQUEST_ID_HEADER] = request_id
    seconds = time.perf_counter() - g.ingest_started
    status = response.status_code
    endpoint = request.endpoint
    metrics.observe_http_request(endpoint, request.method, status, seconds)
    webhook = endpoint is not None and endpoint.startswith(_WEBHOOK_ENDPOINTS)
    if webhook:
        source = g.get("ingest_source")
        metrics.observe_webhook(source, status, g.get("ingest_webhook_reason"), seconds)
        for outcome, count in _event_outcomes(response).items():
            metrics.observe_webhook_events(source, outcome, count)
    if _should_log(webhook, status) and request.path not in _QUIET_PATHS:
        extra = {"status": status, "duration_ms": round(seconds * 1000, 2)}
        if webhook and 200 <= status < 300:
            extra["sampled_one_in"] = _sample()
        access_log.info("%s %s %d", request.method, request.path, status, extra=extra)
    return response


def _sample() -> int:
    return int(current_app.extensions.get(_SAMPLE_KEY, WEBHOOK_ACCESS_LOG_SAMPLE))


def _should_log(webhook: bool, status: int, sample: int | None = None) -> bool:
    """Whether this answer gets an access line: yes, but for successful webhook answers, of
    which only one in ``sample`` (the app's setting) does."""
    if not access_log.isEnabledFor(logging.INFO):
        return False
    if not webhook or not 200 <= status < 300:
        return True
    every = _sample() if sample is None else sample
    return every == 1 or next(_webhook_successes) % every == 0


def _end_request(_: BaseException | None) -> None:
    clear_log_context()


def _instrument_tracing(app: Flask) -> None:
    from tasks.observability import start_tracing

    # The publishing side is traced too: task messages carry the trace to the worker.
    if start_tracing(SERVICE_NAME):
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        FlaskInstrumentor().instrument_app(app, excluded_urls=",".join(sorted(_QUIET_PATHS)))


def init_app(app: Flask) -> None:
    """Install request ids, structured logs, Sentry, metrics, ``/metrics`` and tracing."""
    settings: Settings = app.extensions["ingest.settings"]
    obs = settings.observability
    configure_logging(obs.log_level, obs.log_json)
    app.extensions[_SAMPLE_KEY] = obs.webhook_access_log_sample
    if obs.sentry_dsn:
        from sentry_sdk.integrations.celery import CeleryIntegration
        from sentry_sdk.integrations.flask import FlaskIntegration

        integrations = [FlaskIntegration(), CeleryIntegration()]
        init_error_reporting(obs.sentry_dsn, integrations)
    metrics.set_known_sources(settings.http.sources)
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.teardown_request(_end_request)
    app.register_blueprint(metrics_endpoint.bp)
    _instrument_tracing(app)
