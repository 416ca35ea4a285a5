"""Which failures are worth retrying: transient S3, Redis and sink errors, and an open breaker."""

from __future__ import annotations

import socket
import sys

__all__ = ["PermanentError", "RetryableError", "is_retryable"]

_RETRYABLE_S3_CODES = {
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
    "Throttling",
    "ThrottlingException",
    "RequestTimeTooSkewed",
    "500",
    "502",
    "503",
    "504",
}


class RetryableError(RuntimeError):
    """A failure that may pass on its own; ``retry_after`` suggests when to try again."""

    retry_after: float | None = None


class PermanentError(RuntimeError):
    """A failure that another attempt cannot fix (changed object, unreadable file)."""


def is_retryable(exc: BaseException) -> bool:
    """True for transient failures: retry them with backoff; False: dead-letter at once."""
    if isinstance(exc, PermanentError):
        return False
    if isinstance(exc, RetryableError | ConnectionError | TimeoutError | socket.timeout):
        return True
    # Not loaded means no sink raised it (and the web process need not load the sinks).
    sinks = sys.modules.get("ingest.sinks.base")
    if sinks is not None and isinstance(exc, sinks.SinkError):
        return True
    try:
        import redis

        if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
            return True
    except ImportError:  # pragma: no cover - redis is a dependency
        pass
    from botocore import exceptions as boto

    if isinstance(exc, boto.ClientError):
        error = exc.response.get("Error", {})
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        return error.get("Code") in _RETRYABLE_S3_CODES or status.startswith("5")
    # Network-level failures only: bad parameters or missing credentials never fix themselves.
    return isinstance(
        exc,
        boto.ConnectionError
        | boto.HTTPClientError
        | boto.IncompleteReadError
        | boto.ResponseStreamingError,
    )
