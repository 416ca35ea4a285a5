"""Imports every task module, so that a worker registers the system's tasks."""

from __future__ import annotations

from tasks import (  # noqa: F401
    dispatch,
    dlq,
    health,
    ledger,
    s3,
    watchdog,
    watches,
    webhooks,
)
