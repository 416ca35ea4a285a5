"""A trivial task that proves a worker consumes the control queue (used by /readyz?deep=1)."""

from __future__ import annotations

from celery import shared_task

__all__ = ["ping"]


@shared_task(name="ingest.control.ping", ignore_result=False)
def ping() -> str:
    """Answer ``pong``."""
    return "pong"
