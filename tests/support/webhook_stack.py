"""The Procfile's web and worker started side by side, and the webhook events they stored."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ingest.provenance.verify import records_at
from tests.support.processes import ProcessGroup
from tests.support.services import ManagedProcess

__all__ = ["start_stack", "stored_event_ids"]


def start_stack(procs: ProcessGroup, env: dict[str, str]) -> tuple[ManagedProcess, str]:
    """Start `worker` and `web` side by side (each waits for itself to answer); web and URL."""
    with ThreadPoolExecutor(2) as pool:
        worker = pool.submit(procs.start_worker, env)
        web = pool.submit(procs.start_web, env)
        worker.result()
        return web.result()


def stored_event_ids(sink_dir: Path) -> Counter[str]:
    return Counter(r.record["provenance"]["eventId"] for r in records_at(str(sink_dir)))
