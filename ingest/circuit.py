"""A circuit breaker: after repeated failures of a dependency, stop calling it for a while.

While open, calls fail at once with :class:`CircuitOpenError` (a retryable error carrying
``retry_after``), so tasks back off instead of piling onto a struggling S3 endpoint. After
``reset_seconds`` one trial call is let through (half-open): success closes the breaker,
failure opens it again. State is per process, which is what matters for protecting the
endpoint from this process's own retries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from ingest.errors import RetryableError, is_retryable

__all__ = ["CircuitBreaker", "CircuitOpenError", "breaker_for"]

T = TypeVar("T")
log = logging.getLogger(__name__)


class CircuitOpenError(RetryableError):
    """The breaker is open: the dependency failed repeatedly; try again after ``retry_after``."""

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(
            f"circuit {name} is open after repeated failures; retry in {retry_after:.1f}s"
        )
        self.retry_after = retry_after


class CircuitBreaker:
    """Counts consecutive retryable failures; opens at ``threshold`` for ``reset_seconds``."""

    def __init__(
        self,
        name: str,
        threshold: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.threshold = threshold
        self.reset_seconds = reset_seconds
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self._trial = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self.clock() - self.opened_at >= self.reset_seconds:
            return "half-open"
        return "open"

    def _before(self) -> None:
        with self._lock:
            state = self._state()
            if state == "open" or (state == "half-open" and self._trial):
                assert self.opened_at is not None
                wait = max(0.1, self.reset_seconds - (self.clock() - self.opened_at))
                raise CircuitOpenError(self.name, wait)
            self._trial = state == "half-open"

    def _after(self, failed: bool) -> None:
        with self._lock:
            self._trial = False
            if not failed:
                if self.opened_at is not None:
                    log.warning("circuit %s closed: the dependency answers again", self.name)
                self.failures, self.opened_at = 0, None
                return
            self.failures += 1
            if self.failures >= self.threshold or self.opened_at is not None:
                if self.opened_at is None:
                    log.warning(
                        "circuit %s opened after %d failures; calls fail fast for %.1fs",
                        self.name,
                        self.failures,
                        self.reset_seconds,
                    )
                self.opened_at = self.clock()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` through the breaker; only retryable failures count against it."""
        self._before()
        try:
            result = fn()
        except Exception as exc:
            self._after(failed=is_retryable(exc))
            raise
        self._after(failed=False)
        return result


_breakers: dict[str, CircuitBreaker] = {}
_registry_lock = threading.Lock()


def breaker_for(name: str, threshold: int, reset_seconds: float) -> CircuitBreaker:
    """The process's breaker for ``name`` (one per S3 endpoint), created on first use."""
    with _registry_lock:
        breaker = _breakers.get(name)
        if breaker is None:
            breaker = _breakers[name] = CircuitBreaker(name, threshold, reset_seconds)
        return breaker
