"""The worker's half of the import ledger: a sweeper thread in every worker's main process.

Every ``sweep_interval`` seconds it runs one :class:`~ingest.s3csv.sweeper.LedgerSweeper`
pass: ranges and scans whose lease ran out are sent again, imports whose ranges all have a
result are closed, and imports without progress for ``s3csv.stallTimeout`` end ``failed``.
Every step claims its work atomically in Redis, so any number of workers sweep at once
without sending anything twice (see docs/guarantees.md).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery.signals import worker_ready

from ingest.config import Settings
from ingest.s3csv.imports import ImportStore
from ingest.s3csv.sweeper import LedgerSweeper
from tasks.base import runtime
from tasks.names import QUEUE_CONTROL, QUEUE_RANGES

__all__ = ["build_sweeper", "sweep_interval"]

log = logging.getLogger(__name__)


def sweep_interval(settings: Settings) -> float:
    """A quarter of a lease, between 0.5 and 15 seconds."""
    return min(15.0, max(0.5, settings.s3csv.lease_seconds / 4))


def build_sweeper() -> LedgerSweeper:
    """A sweeper over this process's Redis that dispatches through the Celery tasks."""
    from tasks.s3 import dispatch_chunk, ledger, process_range, scan_import

    rt = runtime()
    cfg = rt.settings.s3csv
    return LedgerSweeper(
        ledger=ledger(),
        store=ImportStore(rt.redis),
        dlq=rt.dlq,
        # ignore_result: nobody waits on these (the ledger tracks the outcome), and a send
        # that expects a result subscribes this thread to the result backend's channel.
        dispatch_range=lambda spec: process_range.apply_async(
            args=[spec], queue=QUEUE_RANGES, ignore_result=True
        ),
        dispatch_scan=lambda import_id: scan_import.apply_async(
            args=[import_id], queue=QUEUE_CONTROL, ignore_result=True
        ),
        dispatch_chunk=dispatch_chunk,
        chunk_size=cfg.fanout_chunk,
        stall_timeout=cfg.stall_timeout,
    )


def _sweep_forever(interval: float) -> None:
    sweeper = build_sweeper()
    log.info("import ledger sweeper: every %.1f s", interval)
    while True:
        time.sleep(interval)
        try:
            sweeper.sweep()
        except Exception as exc:  # Redis down: the ledger stays; try again next time
            log.warning("import ledger sweep failed: %s", exc)


@worker_ready.connect
def _start_sweeper(sender: Any = None, **_: Any) -> None:
    if sender is None:
        return
    settings = runtime().settings
    threading.Thread(
        target=_sweep_forever,
        args=(sweep_interval(settings),),
        name="ingest-ledger-sweeper",
        daemon=True,
    ).start()
