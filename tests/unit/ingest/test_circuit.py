"""The circuit breaker opens after repeated retryable failures, fails fast, and closes again."""

from __future__ import annotations

import pytest

from ingest.circuit import CircuitBreaker, CircuitOpenError
from ingest.errors import PermanentError, RetryableError, is_retryable


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def failing() -> None:
    raise RetryableError("S3 answered 503 SlowDown")


class TestCircuitBreaker:
    def test_opens_after_threshold_and_fails_fast(self) -> None:
        clock = Clock()
        breaker = CircuitBreaker("s3", threshold=3, reset_seconds=10, clock=clock)
        for _ in range(3):
            with pytest.raises(RetryableError):
                breaker.call(failing)
        assert breaker.state == "open"
        calls = []
        with pytest.raises(CircuitOpenError) as opened:
            breaker.call(lambda: calls.append(1))
        assert calls == [] and 0 < opened.value.retry_after <= 10
        assert is_retryable(opened.value)

    def test_half_open_trial_success_closes(self) -> None:
        clock = Clock()
        breaker = CircuitBreaker("s3", threshold=1, reset_seconds=5, clock=clock)
        with pytest.raises(RetryableError):
            breaker.call(failing)
        clock.now = 5.0
        assert breaker.state == "half-open"
        assert breaker.call(lambda: "ok") == "ok"
        assert breaker.state == "closed" and breaker.failures == 0

    def test_half_open_trial_failure_reopens(self) -> None:
        clock = Clock()
        breaker = CircuitBreaker("s3", threshold=2, reset_seconds=5, clock=clock)
        for _ in range(2):
            with pytest.raises(RetryableError):
                breaker.call(failing)
        clock.now = 6.0
        with pytest.raises(RetryableError):
            breaker.call(failing)
        assert breaker.state == "open"

    def test_permanent_errors_do_not_count(self) -> None:
        breaker = CircuitBreaker("s3", threshold=1, reset_seconds=5, clock=Clock())

        def changed() -> None:
            raise PermanentError("object changed")

        with pytest.raises(PermanentError):
            breaker.call(changed)
        assert breaker.state == "closed"

    def test_success_resets_the_count(self) -> None:
        breaker = CircuitBreaker("s3", threshold=2, reset_seconds=5, clock=Clock())
        with pytest.raises(RetryableError):
            breaker.call(failing)
        breaker.call(lambda: None)
        with pytest.raises(RetryableError):
            breaker.call(failing)
        assert breaker.state == "closed"
