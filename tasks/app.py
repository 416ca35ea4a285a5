"""The workers' Celery app: ``celery -A tasks.app worker`` (and ``flower``).

Importing this module loads the settings from the environment and every task module; a bad
configuration stops the worker with a message that names the key. Nothing but the worker
imports it: the web and the CLI send through :func:`tasks.factory.app_for`.
"""

from __future__ import annotations

import sys

from ingest.config import ConfigError, Settings, load_settings
from tasks.factory import celery_config, create_celery
from tasks.names import ALL_QUEUES, QUEUE_CONTROL, QUEUE_DLQ, QUEUE_RANGES, QUEUE_WEBHOOKS

__all__ = [
    "ALL_QUEUES",
    "QUEUE_CONTROL",
    "QUEUE_DLQ",
    "QUEUE_RANGES",
    "QUEUE_WEBHOOKS",
    "app",
    "celery_config",
    "create_celery",
]


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"ingest: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


app = create_celery(_settings_or_exit(), worker=True)
