"""A Celery app for *sending* tasks from the web process and the CLI (no worker code loaded)."""

from __future__ import annotations

import threading

from celery import Celery

from ingest.config import Settings
from tasks.app import celery_config

__all__ = ["sender_for"]

_lock = threading.Lock()
_apps: dict[int, Celery] = {}


def sender_for(settings: Settings) -> Celery:
    """One sending Celery app per settings object, configured like the workers' app."""
    with _lock:
        app = _apps.get(id(settings))
        if app is None:
            app = Celery("intelgraph_ingest_sender", set_as_current=False)
            app.conf.update(celery_config(settings))
            _apps[id(settings)] = app
        return app
