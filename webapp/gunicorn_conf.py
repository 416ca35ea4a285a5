"""gunicorn settings of the ``web`` process: gevent workers bound to 0.0.0.0:$PORT."""

from __future__ import annotations

import multiprocessing
from typing import Any

from ingest.config import load_settings
from ingest.observability.metrics import use_multiprocess_values
from ingest.observability.metrics_dir import prepare_metrics_dir
from webapp import gunicorn_response

_settings = load_settings()
# prometheus-client multiprocess mode for every worker, set here in the master before they
# fork (see docs/observability.md). Importing this module ran webapp/__init__, which loaded
# prometheus_client already, hence the switch of its value class as well as the variable.
_metrics_dir = prepare_metrics_dir(_settings.observability.metrics_dir, f"web-{_settings.port}")
_metrics_dir.activate()
use_multiprocess_values()

# A whole JSON answer leaves in one write with its headers, and a peer's right to send
# X-Forwarded-* headers is worked out once per address (webapp/gunicorn_response.py).
gunicorn_response.install()
gunicorn_response.install_peer_cache()

bind = f"0.0.0.0:{_settings.port}"
worker_class = "gevent"
# gunicorn's C HTTP parser (the gunicorn_h1c package, a dependency), else its Python one.
http_parser = "auto"
# Two per core suits gevent's I/O-bound handlers.
workers = _settings.web_workers or 2 * multiprocessing.cpu_count()
worker_connections = 1000
# A handler never blocks long: slow dependencies answer 503 well before this.
timeout = 30
graceful_timeout = 30
keepalive = 5
accesslog = None
errorlog = "-"


def child_exit(server: Any, worker: Any) -> None:
    """Retire a dead worker's live gauges from the multiprocess directory."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Remove the metrics directory when it was a temporary one."""
    _metrics_dir.cleanup()
