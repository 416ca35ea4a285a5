"""kill -9 of a worker during an import: it still succeeds, every row stored exactly once."""

from __future__ import annotations

import hashlib
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from devstack import ROOT
from ingest.sinks import FileSink
from tests.processes import ProcessGroup
from tests.services import wait_for

pytestmark = pytest.mark.faults
sys.path.insert(0, str(ROOT / "loadtests"))


def input_csv(rows: int) -> bytes:
    from gen_csv import generate  # type: ignore[import-not-found]

    # No quoted newlines: then every line after the header is one record.
    return "".join(generate(rows, seed=7, newline_rate=0.0)).encode()


def import_state(env: dict[str, str], import_id: str) -> dict[str, Any]:
    import redis

    from ingest.s3csv.imports import ImportStore

    return ImportStore(redis.Redis.from_url(env["INGEST_REDIS_URL"])).get(import_id) or {}


def wait_finished(env: dict[str, str], import_id: str, timeout: float, what: str) -> dict[str, Any]:
    """Wait until the import ends, succeeded or failed, and return its state."""

    def finished() -> dict[str, Any] | None:
        state = import_state(env, import_id)
        return state if state.get("status") in ("succeeded", "failed") else None

    return wait_for(finished, timeout, 0.2, what)  # type: ignore[no-any-return]


def assert_every_row_once(state: dict[str, Any], data: bytes, sink_dir: Path) -> None:
    """The import succeeded and the sink holds each input row exactly once (count and hashes)."""
    assert state["status"] == "succeeded", state
    total = len(data.splitlines()) - 1
    assert state["rowsStored"] == total
    assert state["bytesProcessed"] == state["bytesTotal"] == len(data)
    sink = FileSink(f"file://{sink_dir}")
    stored = [r.record["provenance"]["contentHash"] for r in sink.iter_records()]
    assert len(stored) == total, "a row was stored twice or lost"
    assert set(stored) == {hashlib.sha256(line).hexdigest() for line in data.splitlines()[1:]}


def test_three_worker_kills_during_an_import(
    stack_env: dict[str, str], procs: ProcessGroup, s3_client: Any, bucket: str, sink_dir: Path
) -> None:
    data = input_csv(60_000)
    s3_client.put_object(Bucket=bucket, Key="big/input.csv", Body=data)
    env = dict(
        stack_env,
        INGEST_S3CSV__RANGE_SIZE="65536",
        INGEST_S3CSV__DEDUPLICATION__ENABLED="false",
        INGEST_CELERY__VISIBILITY_TIMEOUT="600",
    )
    worker = procs.start_worker(env)

    from ingest.config import load_settings
    from ingest.runtime import Runtime
    from tasks.imports import submit_import

    rt = Runtime(load_settings(env))
    import_id = submit_import(
        rt.settings,
        rt.redis,
        rt.schemas,
        {"uri": f"s3://{bucket}/big/", "schema": "events_wide", "purpose": "fault-test"},
        "test",
    )
    for kill_at in (0.15, 0.4, 0.65):

        def progressed(threshold: float = kill_at) -> bool:
            state = import_state(env, import_id)
            ranges = state.get("ranges", {})
            return bool(ranges.get("total")) and ranges["done"] >= threshold * ranges["total"]

        wait_for(progressed, 120, 0.05, f"{kill_at:.0%} of the ranges")
        worker.signal_group(signal.SIGKILL)
        assert worker.proc is not None
        worker.proc.wait(timeout=10)
        worker = procs.start_worker(env)

    # Recovery is prompt (tasks of the killed worker are restored when a worker starts),
    # far inside the 600 s visibility timeout configured above.
    state = wait_finished(env, import_id, 180, "the import to finish after the kills")
    assert_every_row_once(state, data, sink_dir)
