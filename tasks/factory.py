"""The one Celery app factory: the workers' app and the sending app of the web and the CLI.

``create_celery(settings, worker=True)`` builds the workers' app (``tasks.app``), which loads
every task module. Every other process (the web, the CLI) sends tasks by name through
:func:`app_for`: the same configuration, built once per configuration, with no task module
loaded. In a worker, :func:`app_for` returns the worker's own app.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterable

from celery import Celery
from kombu import Queue

from ingest.config import Settings
from tasks.names import ALL_QUEUES, QUEUE_CONTROL, TASK_ROUTES

__all__ = ["app_for", "celery_config", "create_celery", "queue_depths"]

APP_NAME = "intelgraph_ingest"


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
        "task_routes": TASK_ROUTES,
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


def create_celery(settings: Settings, *, worker: bool = False) -> Celery:
    """A Celery app configured from ``settings``; with ``worker``, the system's tasks loaded.

    The worker's app becomes the process's current app and the one :func:`app_for` returns.
    """
    global _worker_app
    celery = Celery(APP_NAME, set_as_current=worker)
    celery.conf.update(celery_config(settings))
    celery.conf.ingest_settings = settings
    if worker:
        from tasks import observability  # noqa: F401  (logs, metrics, traces: signal handlers)
        from tasks.result_backend import BACKEND_CLASS

        # The same Redis, without the result subscriptions a worker would never read.
        celery.conf.result_backend = f"{BACKEND_CLASS}+{settings.redis_url}"

        celery.autodiscover_tasks(["tasks"], related_name="registry", force=True)
        _worker_app = celery
    return celery


_lock = threading.Lock()
_worker_app: Celery | None = None
_senders: dict[str, Celery] = {}


def _fingerprint(settings: Settings) -> str:
    config = celery_config(settings)
    config["task_queues"] = list(ALL_QUEUES)
    return json.dumps(config, sort_keys=True, default=str)


def app_for(settings: Settings) -> Celery:
    """The app this process sends tasks through: the worker's own app in a worker, else one
    sending app per Celery configuration (tests run several configurations in one process)."""
    key = _fingerprint(settings)
    worker = _worker_app
    if worker is not None and _fingerprint(worker.conf.ingest_settings) == key:
        return worker
    with _lock:
        app = _senders.get(key)
        if app is None:
            app = _senders[key] = create_celery(settings)
        return app


def queue_depths(settings: Settings, queues: Iterable[str] = ALL_QUEUES) -> dict[str, int]:
    """Messages waiting in each queue, as the broker reports them (``queue_declare(passive)``).

    The broker's own API, not its storage layout: with Redis, kombu sums the priority lists
    itself; with another broker the same call works. A queue the broker does not know yet
    (nothing was ever sent to it) holds no messages.
    """
    depths: dict[str, int] = {}
    with app_for(settings).pool.acquire(block=True, timeout=5) as conn:
        for queue in queues:
            channel = conn.channel()
            try:
                depths[queue] = int(channel.queue_declare(queue=queue, passive=True).message_count)
            except conn.channel_errors:  # NOT_FOUND
                depths[queue] = 0
            finally:
                # An AMQP broker closes the channel on NOT_FOUND by itself.
                with contextlib.suppress(*conn.channel_errors):
                    channel.close()
    return depths
