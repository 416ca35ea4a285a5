"""A trivial task that proves a worker consumes the control queue (used by /readyz?deep=1)."""

from __future__ import annotations

from celery import shared_task

from tasks.names import PING

__all__ = ["ping"]


@shared_task(name=PING, ignore_result=False)
def ping() -> str:
    """Answer ``pong``."""
    return "pong"
