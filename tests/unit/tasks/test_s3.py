"""Delivery policy of the S3 import tasks: what makes them retry instead of ending the chain."""

from __future__ import annotations

import pytest
import redis

from tasks.s3 import close_chunk


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ConnectionError("connection refused"),
        redis.exceptions.TimeoutError("timed out"),
        redis.exceptions.BusyLoadingError("loading"),
        redis.exceptions.ResponseError("OOM command not allowed"),
        OSError("network unreachable"),
    ],
)
def test_close_chunk_retries_redis_and_network_errors(error: Exception) -> None:
    # Celery retries a task whose exception is an instance of ``autoretry_for``; redis-py's
    # errors are not OSErrors, so they must be named.
    assert isinstance(error, tuple(close_chunk.autoretry_for))
