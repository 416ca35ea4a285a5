"""Every error answer is JSON with an ``error`` a person can act on; nothing leaks a 500 page."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

__all__ = ["ApiError", "error_response", "register"]

log = logging.getLogger(__name__)


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


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.headers, **exc.fields)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # A dependency failure, not the client's fault: 503 tells clients to come back.
        log.exception("unhandled error")
        return error_response(
            503, "the service could not complete the request; retry later", {"Retry-After": "5"}
        )
