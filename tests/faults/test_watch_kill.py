"""kill -9 of the worker while a watch's import runs: every row once, one import started."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tests.faults.test_worker_kill import assert_every_row_once, input_csv, wait_finished
from tests.support.processes import ProcessGroup
from tests.support.services import wait_for
from tests.support.watch_support import WatchedPrefix

pytestmark = pytest.mark.faults


def test_a_killed_worker_leaves_one_import_that_stores_every_row_once(
    stack_env: dict[str, str],
    procs: ProcessGroup,
    s3_endpoint: str,
    s3_client: Any,
    bucket: str,
    sink_dir: Path,
) -> None:
    watched = WatchedPrefix(s3_endpoint, s3_client, bucket, schema="events_wide")
    env = watched.env(
        stack_env,
        INGEST_S3CSV__RANGE_SIZE="65536",
        INGEST_S3CSV__DEDUPLICATION__ENABLED="false",
        INGEST_CELERY__VISIBILITY_TIMEOUT="600",
    )
    redis_url = env["INGEST_REDIS_URL"]
    worker = procs.start_worker(env)
    data = input_csv(30_000)
    s3_client.put_object(Bucket=bucket, Key="drop/big.csv", Body=data)

    def running() -> dict[str, Any] | None:
        found = watched.imports(redis_url)
        ranges = found[0].get("ranges", {}) if found else {}
        return found[0] if ranges.get("total") and ranges["done"] >= ranges["total"] // 4 else None

    state = wait_for(running, 120, 0.05, "a quarter of the watch's import")
    worker.signal_group(signal.SIGKILL)
    assert worker.proc is not None
    worker.proc.wait(timeout=10)
    # The same object notified again meanwhile (a re-upload of the same bytes).
    s3_client.put_object(Bucket=bucket, Key="drop/big.csv", Body=data)
    procs.start_worker(env)

    final = wait_finished(env, state["importId"], 180, "the import to finish after the kill")
    assert_every_row_once(final, data, sink_dir)
    watched.wait_settled(redis_url, imports=1)
    assert [s["importId"] for s in watched.imports(redis_url)] == [state["importId"]]
    assert watched.stats(redis_url)["importsStarted"] == 1
