"""Every error answer is JSON with an ``error`` a person can act on; nothing leaks a 500 page.

A dependency that is down (Redis unreachable, full or loading; a transient storage failure)
answers 503 with ``Retry-After``: the sender should come back. Anything else unexpected is a
fault of this service: 500 with the request id, counted in ``ingest_http_unhandled_errors``
and reported to Sentry, never disguised as a 503 that would make partners retry a bug forever.
"""

from __future__ import annotations

import logging
from typing import Any

import sentry_sdk
from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from ingest.errors import is_retryable
from ingest.observability.metrics import observe_unhandled_error

__all__ = ["ApiError", "error_response", "is_dependency_outage", "register"]

log = logging.getLogger(__name__)
# Redis error replies that mean "the server cannot take writes now", not "bad command".
_UNAVAILABLE_REPLIES = ("OOM", "MISCONF", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN")


class ApiError(Exception):
    """An error answer: status code, a message for a person, and optional headers and fields."""

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None, **fields: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.fields = fields


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None, **fields: Any
) -> Response:
    response = jsonify({"error": message, **fields})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def is_dependency_outage(exc: BaseException) -> bool:
    """True when ``exc`` says a dependency is down or overloaded, not that our code is wrong."""
    import redis

    if isinstance(exc, redis.exceptions.ResponseError):
        return str(exc).startswith(_UNAVAILABLE_REPLIES)
    return is_retryable(exc)


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.headers, **exc.fields)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        if is_dependency_outage(exc):
            # Not the client's fault and not a bug: 503 tells clients to come back.
            log.warning("dependency unavailable: %s: %s", type(exc).__name__, exc)
            return error_response(
                503, "a dependency of the service is unavailable; retry later", {"Retry-After": "5"}
            )
        request_id = g.get("ingest_request_id")
        observe_unhandled_error(request.endpoint)
        sentry_sdk.capture_exception(exc)
        # Sentry's dedupe drops the logging integration's copy of the same exception.
        log.exception("unhandled error (request %s)", request_id)
        return error_response(
            500,
            "internal error: the service failed on this request; it was reported"
            + (f", quote request id {request_id}" if request_id else ""),
            requestId=request_id,
        )
