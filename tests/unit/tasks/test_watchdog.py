"""A worker whose shutdown wedges after an unrecoverable error still exits, for its supervisor."""

from __future__ import annotations

import logging
import threading

import pytest

from tasks import watchdog


def record(message: str, level: int = logging.CRITICAL) -> logging.LogRecord:
    return logging.LogRecord("celery.worker", level, __file__, 1, message, None, None)


def test_an_unrecoverable_error_arms_the_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    exited = threading.Event()
    monkeypatch.setattr(watchdog, "_exit_now", lambda grace: exited.set())
    handler = watchdog.ExitAfterUnrecoverable(grace=0.01)
    handler.handle(record("Unrecoverable error: %r"))
    assert exited.wait(5)


def test_other_lines_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    exited = threading.Event()
    monkeypatch.setattr(watchdog, "_exit_now", lambda grace: exited.set())
    handler = watchdog.ExitAfterUnrecoverable(grace=0.01)
    handler.handle(record("Couldn't ack %r, reason:%r"))
    handler.handle(record("Unrecoverable error: %r", logging.ERROR))  # below the handler's level
    assert not handler.armed
    assert not exited.is_set()


# -- a consumer that stopped taking messages ------------------------------------------------


def test_the_stall_clock_counts_uninterrupted_idle_time_with_messages_waiting() -> None:
    clock = watchdog.StallClock(limit=10)
    assert not clock.observe(0, idle=True, waiting=3)
    assert not clock.observe(9.9, idle=True, waiting=3)
    assert clock.observe(10, idle=True, waiting=1)


@pytest.mark.parametrize(
    ("idle", "waiting"),
    [(False, 3), (True, 0), (True, None)],
    ids=["a task ran", "nothing waited", "queues unreadable"],
)
def test_any_sign_of_life_starts_the_count_again(idle: bool, waiting: int | None) -> None:
    clock = watchdog.StallClock(limit=10)
    clock.observe(0, idle=True, waiting=3)
    assert not clock.observe(8, idle=idle, waiting=waiting)
    assert not clock.observe(15, idle=True, waiting=3)  # 0 s into a new count, not 15
    assert clock.observe(25, idle=True, waiting=3)


def test_the_watchdog_names_the_queues_that_wait() -> None:
    depths = {"ingest.control": 0, "ingest.ranges": 4}
    dog = watchdog.ConsumerWatchdog(
        30, sorted(depths), lambda queues: {q: depths[q] for q in queues}, busy=lambda: False
    )
    assert dog.check(100) is None
    reason = dog.check(130)
    assert reason is not None
    assert "4 in ingest.ranges" in reason and "ingest.control" not in reason


def test_a_busy_worker_or_an_unreachable_broker_is_not_a_stall() -> None:
    busy = True

    def depths(queues: list[str]) -> dict[str, int]:
        if not busy:
            raise ConnectionError("Redis is away")
        return {"ingest.ranges": 2}

    dog = watchdog.ConsumerWatchdog(30, ["ingest.ranges"], depths, busy=lambda: busy)
    assert dog.check(0) is None and dog.check(100) is None
    busy = False
    assert dog.check(200) is None and dog.check(300) is None
