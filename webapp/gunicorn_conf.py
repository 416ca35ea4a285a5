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


# A gevent worker adds its metric updates up in memory and writes them once a second
# (ingest/observability/metrics/buffer.py), and before it serves /metrics or exits.
METRICS_FLUSH_SECONDS = 1.0
# The cyclic garbage collector, once the app is loaded: everything loaded so far is frozen
# out of its scans, and it runs every 7,000 net allocations instead of 700. By default it
# took about 3% of a worker's CPU at 1,000 requests/s, mostly in full scans of the loaded app.
GC_THRESHOLDS = (7000, 20, 20)


def post_worker_init(worker: Any) -> None:
    """Tune the garbage collector and, in a gevent worker, buffer the metric updates."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    if "gevent" not in type(worker).__module__:
        return  # other worker classes may serve requests on several threads
    import gevent

    from ingest.observability.metrics import BUFFER

    def flush_forever() -> None:
        while True:
            gevent.sleep(METRICS_FLUSH_SECONDS)
            try:
                BUFFER.flush()
            except Exception:  # a metric file that cannot be written must not stop the loop
                worker.log.exception("writing the buffered metrics failed")

    BUFFER.enable()
    gevent.spawn(flush_forever)


def worker_exit(server: Any, worker: Any) -> None:
    """Write the metric updates still buffered before the worker goes."""
    from ingest.observability.metrics import BUFFER

    BUFFER.flush()


def child_exit(server: Any, worker: Any) -> None:
    """Retire a dead worker's live gauges from the multiprocess directory."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Remove the metrics directory when it was a temporary one."""
    _metrics_dir.cleanup()
