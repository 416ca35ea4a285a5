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
