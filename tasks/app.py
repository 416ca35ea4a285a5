"""The Celery application: queues per workload and the delivery settings every task relies on.

``celery -A tasks.app worker`` loads the settings from the environment when this module is
imported; a bad configuration stops the worker with a message that names the key.
"""

from __future__ import annotations

import sys

from celery import Celery
from kombu import Queue

from ingest.config import ConfigError, Settings, load_settings
from tasks import observability  # noqa: F401  (logs, metrics, traces, Sentry: signal handlers)

__all__ = [
    "ALL_QUEUES",
    "QUEUE_CONTROL",
    "QUEUE_DLQ",
    "QUEUE_RANGES",
    "QUEUE_WEBHOOKS",
    "app",
    "create_celery",
]

QUEUE_WEBHOOKS = "ingest.webhooks"
QUEUE_RANGES = "ingest.ranges"
QUEUE_CONTROL = "ingest.control"
QUEUE_DLQ = "ingest.dlq"
ALL_QUEUES = (QUEUE_WEBHOOKS, QUEUE_CONTROL, QUEUE_RANGES, QUEUE_DLQ)


def celery_config(settings: Settings) -> dict[str, object]:
    """Celery settings, each with the reason it is set (see docs/architecture.md)."""
    broker = settings.effective_broker_url
    return {
        "broker_url": broker,
        # Chords need a result backend; Redis keeps the chord counter atomically.
        "result_backend": settings.redis_url,
        "result_expires": settings.celery.result_expires,
        # JSON only: nothing executable travels through the broker.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # Acknowledge after the task ran, so a worker that dies mid-task leaves it queued...
        "task_acks_late": True,
        # ...including a worker killed by a signal or the OOM killer.
        "task_reject_on_worker_lost": True,
        # Long tasks: one reserved task per process, so work is not hoarded by a busy worker.
        "worker_prefetch_multiplier": settings.celery.prefetch_multiplier,
        # Redis redelivers an unacknowledged task after this long; every task finishes well
        # inside it (ranges are tens of MB), so a dead worker's work returns in minutes.
        "broker_transport_options": {
            "visibility_timeout": settings.celery.visibility_timeout,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "retry_on_timeout": True,
            "health_check_interval": 30,
        },
        "result_backend_transport_options": {
            "visibility_timeout": settings.celery.visibility_timeout
        },
        "broker_connection_retry_on_startup": True,
        "task_queues": [Queue(name) for name in ALL_QUEUES],
        "task_default_queue": QUEUE_CONTROL,
        "task_routes": {
            "ingest.webhooks.*": {"queue": QUEUE_WEBHOOKS},
            "ingest.s3.range": {"queue": QUEUE_RANGES},
            "ingest.s3.*": {"queue": QUEUE_CONTROL},
            "ingest.control.*": {"queue": QUEUE_CONTROL},
            "ingest.dlq.*": {"queue": QUEUE_DLQ},
        },
        # Let Flower and `celery events` see what runs.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        # Results of webhook and range tasks are small summaries; nothing large is kept.
        "task_ignore_result": False,
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "timezone": "UTC",
        **(
            {"worker_concurrency": settings.s3csv.concurrency} if settings.s3csv.concurrency else {}
        ),
    }


def create_celery(settings: Settings) -> Celery:
    """A Celery app configured from ``settings``, with the system's tasks registered."""
    celery = Celery("intelgraph_ingest")
    celery.conf.update(celery_config(settings))
    celery.conf.ingest_settings = settings
    celery.autodiscover_tasks(["tasks"], related_name="registry", force=True)
    return celery


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"ingest: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


app = create_celery(_settings_or_exit())
