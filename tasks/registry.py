"""Imports every task module, so that a worker registers the system's tasks."""

from __future__ import annotations

from tasks import (  # noqa: F401
    dlq,
    health,
    ledger,
    outbox,
    recovery,
    s3,
    webhooks,
)
