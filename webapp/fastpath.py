"""A lean WSGI front for ``POST /v1/webhooks/<source>``, the hottest route, in front of Flask.

It runs the same decision as the Flask route (:func:`webapp.webhooks.receive_single`) with the
same request ids, metrics, access log and error answers, but without Flask's per-request
machinery (request and app contexts, URL matching, hooks, response objects), which costs about
as much CPU as the decision itself. Every other request, and every request while tracing is
on (the Flask instrumentation then traces it), goes to Flask unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from ingest.observability import metrics
from ingest.observability.logs import bind_log_context, clear_log_context
from ingest.observability.metrics import EventOutcome
from ingest.observability.tracing import tracing_active
from ingest.webhooks.idempotency import encode_result
from webapp.errors import ApiError, is_dependency_outage
from webapp.observability import REQUEST_ID_HEADER, WEBHOOK_ACCESS_LOG_SAMPLE
from webapp.webhooks import REDIS_DOWN, REDIS_ERRORS, Answer, receive_single, services_for

__all__ = ["WebhookFastPath", "install"]

log = logging.getLogger("webapp.webhooks")
access_log = logging.getLogger("ingest.access")
PREFIX = "/v1/webhooks/"
ENDPOINT = "webhooks.receive_event"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
_ENCODER = json.JSONEncoder(separators=(",", ":"))
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
_REASONS = {
    200: "200 OK",
    202: "202 ACCEPTED",
    400: "400 BAD REQUEST",
    401: "401 UNAUTHORIZED",
    404: "404 NOT FOUND",
    408: "408 REQUEST TIMEOUT",
    409: "409 CONFLICT",
    413: "413 REQUEST ENTITY TOO LARGE",
    415: "415 UNSUPPORTED MEDIA TYPE",
    422: "422 UNPROCESSABLE ENTITY",
    429: "429 TOO MANY REQUESTS",
    500: "500 INTERNAL SERVER ERROR",
    503: "503 SERVICE UNAVAILABLE",
}


class WebhookFastPath:
    """WSGI middleware: single webhook events here, everything else to ``inner``."""

    def __init__(self, app: Flask, inner: WsgiApp) -> None:
        self._app = app
        self._inner = inner
        self._sample = int(
            app.extensions.get("ingest.access_log_sample", WEBHOOK_ACCESS_LOG_SAMPLE)
        )
        self._successes = 0

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if (
            environ.get("REQUEST_METHOD") != "POST"
            or not path.startswith(PREFIX)
            or "/" in path[len(PREFIX) :]
            or len(path) == len(PREFIX)
            or tracing_active()
        ):
            return self._inner(environ, start_response)
        return self._serve(environ, start_response, path[len(PREFIX) :])

    def _serve(
        self, environ: dict[str, Any], start_response: StartResponse, name: str
    ) -> Iterable[bytes]:
        started = time.perf_counter()
        given = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = given if _REQUEST_ID.match(given) else os.urandom(16).hex()
        label = metrics.source_label(name)
        clear_log_context()
        bind_log_context(request_id=request_id, source=label)
        try:
            answer = self._answer(environ, name, request_id)
            seconds = time.perf_counter() - started
            self._observe(answer, label, seconds, environ)
            body = (_encode(answer.body) + "\n").encode()
            headers = [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                *answer.headers.items(),
                (REQUEST_ID_HEADER, request_id),
            ]
            start_response(_REASONS.get(answer.status, str(answer.status)), headers)
            return [body]
        finally:
            clear_log_context()

    def _answer(self, environ: dict[str, Any], name: str, request_id: str) -> Answer:
        try:
            return receive_single(services_for(self._app), name, environ)
        except ApiError as exc:
            reason = getattr(exc, "reason", None)
            return Answer(exc.status, {"error": exc.message, **exc.fields}, exc.headers, reason)
        except REDIS_ERRORS as exc:
            log.warning("webhook request failed, Redis unreachable: %s", exc)
            return Answer(503, {"error": REDIS_DOWN}, {"Retry-After": "5"})
        except Exception as exc:
            if is_dependency_outage(exc):
                log.warning("dependency unavailable: %s: %s", type(exc).__name__, exc)
                message = "a dependency of the service is unavailable; retry later"
                return Answer(503, {"error": message}, {"Retry-After": "5"})
            # A bug, not the client's input nor an outage: say so, count it and report it.
            metrics.observe_unhandled_error(ENDPOINT)
            _report(exc)
            log.exception("unhandled error (request %s)", request_id)
            message = (
                "internal error: the service failed on this request; it was reported, "
                f"quote request id {request_id}"
            )
            return Answer(500, {"error": message, "requestId": request_id})

    def _observe(self, answer: Answer, label: str, seconds: float, environ: dict[str, Any]) -> None:
        status = answer.status
        metrics.observe_http_request(ENDPOINT, "POST", status, seconds)
        metrics.observe_webhook(label, status, answer.reason, seconds)
        if status == 202:
            outcome = EventOutcome.ACCEPTED
        else:
            outcome = EventOutcome.DUPLICATE if status == 200 else EventOutcome.REJECTED
        metrics.observe_webhook_events(label, outcome, 1)
        if not access_log.isEnabledFor(logging.INFO):
            return
        extra: dict[str, Any] = {"status": status, "duration_ms": round(seconds * 1000, 2)}
        if 200 <= status < 300:
            self._successes += 1
            if self._sample != 1 and self._successes % self._sample != 1:
                return
            extra["sampled_one_in"] = self._sample
        access_log.info("POST %s %d", environ.get("PATH_INFO", ""), status, extra=extra)


def _encode(body: Any) -> str:
    """``body`` as compact JSON; an answer whose keys and values are all text (a 202's and a
    duplicate's) without an encoder run."""
    if type(body) is dict and all(type(v) is str for v in body.values()):
        return encode_result(body)
    return _ENCODER.encode(body)


def _report(exc: BaseException) -> None:
    try:
        import sentry_sdk

        sentry_sdk.capture_exception(exc)
    except Exception:  # error reporting must never turn an answer into a crash
        log.debug("reporting to Sentry failed", exc_info=True)


def install(app: Flask) -> None:
    """Put the fast path in front of ``app``'s WSGI callable (the test client uses it too)."""
    app.wsgi_app = WebhookFastPath(app, app.wsgi_app)  # type: ignore[method-assign]
