"""The worker's half of the webhook outbox: republish accepted batches that were never stored.

Every worker's main process runs a sweeper thread. Every ``sweep_interval`` seconds it takes
the outbox entries whose due time has passed (``http.redeliverAfter`` seconds after the web
wrote them, or after their last republish or retry) and publishes each again to the webhook
queue. The claim moves the due time in the same Redis step, so of several workers only one
republishes an entry. See ``ingest.http.outbox`` for why the outbox exists.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import Celery
from celery.signals import worker_ready

from ingest.config import Settings, load_settings
from ingest.http.outbox import Outbox, publish_batch
from ingest.runtime import Runtime
from tasks.app import QUEUE_WEBHOOKS
from tasks.webhooks import TASK_NAME

__all__ = ["republish_due", "sweep_interval"]

log = logging.getLogger(__name__)


def sweep_interval(settings: Settings) -> float:
    """A quarter of ``redeliverAfter``, between 1 and 30 seconds."""
    return min(30.0, max(1.0, settings.http.redeliver_after / 4))


def republish_due(app: Celery, outbox: Outbox, limit: int = 100) -> int:
    """Publish every due outbox entry again; returns how many."""
    total = 0
    while True:
        due = outbox.claim_due(limit)
        for payload in due:
            publish_batch(app, TASK_NAME, QUEUE_WEBHOOKS, payload)
        total += len(due)
        if len(due) < limit:
            return total


def _sweep_forever(app: Celery, outbox: Outbox, interval: float) -> None:
    log.info(
        "webhook outbox sweeper: every %.0f s, republishing after %d s",
        interval,
        outbox.redeliver_after,
    )
    while True:
        time.sleep(interval)
        try:
            count = republish_due(app, outbox)
        except Exception as exc:  # Redis down: the entries stay; try again next time
            log.warning("outbox sweep failed: %s", exc)
            continue
        if count:
            log.warning("republished %d accepted webhook batches not stored in time", count)


@worker_ready.connect
def _start_sweeper(sender: Any = None, **_: Any) -> None:
    if sender is None:
        return
    settings = load_settings()
    outbox = Outbox(Runtime(settings).redis, settings.http.redeliver_after)
    threading.Thread(
        target=_sweep_forever,
        args=(sender.app, outbox, sweep_interval(settings)),
        name="ingest-outbox-sweeper",
        daemon=True,
    ).start()
