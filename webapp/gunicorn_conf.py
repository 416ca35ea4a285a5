"""gunicorn settings of the ``web`` process: gevent workers bound to 0.0.0.0:$PORT."""

from __future__ import annotations

import multiprocessing

from ingest.config import load_settings

_settings = load_settings()

bind = f"0.0.0.0:{_settings.port}"
worker_class = "gevent"
# Two per core suits gevent's I/O-bound handlers.
workers = _settings.web_workers or 2 * multiprocessing.cpu_count()
worker_connections = 1000
# A handler never blocks long: slow dependencies answer 503 well before this.
timeout = 30
graceful_timeout = 30
keepalive = 5
accesslog = None
errorlog = "-"
