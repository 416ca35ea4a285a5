"""kill -9 of a worker at random moments of an import (scan, ranges, chord callback): it still
succeeds, every row stored exactly once."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from devstack import ROOT
from ingest.sinks import FileSink
from tests.support.processes import ProcessGroup
from tests.support.services import wait_for

pytestmark = pytest.mark.faults
# Kills per import: a few in CI; scripts/fault-tier.sh can ask for more (FAULT_TIER_KILLS=20).
FAULT_KILLS = int(os.environ.get("FAULT_TIER_KILLS", "4"))
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


def fault_env(stack_env: dict[str, str]) -> dict[str, str]:
    """Short leases and a short stall bound, so that recovery shows within seconds."""
    return dict(
        stack_env,
        INGEST_S3CSV__RANGE_SIZE="65536",
        INGEST_S3CSV__FANOUT_CHUNK="32",
        INGEST_S3CSV__DEDUPLICATION__ENABLED="false",
        INGEST_S3CSV__LEASE_SECONDS="3",
        INGEST_S3CSV__STALL_TIMEOUT="120",
        # Far beyond the test: recovery must come from the ledger, not from kombu.
        INGEST_CELERY__VISIBILITY_TIMEOUT="600",
        # A consumer that stopped after the Redis kill exits soon, and the test restarts it.
        INGEST_CELERY__CONSUMER_STALL_TIMEOUT="15",
    )


def submit(env: dict[str, str], uri: str) -> str:
    from ingest.config import load_settings
    from ingest.runtime import Runtime
    from tasks.imports import submit_import

    rt = Runtime(load_settings(env))
    request = {"uri": uri, "schema": "events_wide", "purpose": "fault-test"}
    return submit_import(rt.settings, rt.redis, rt.schemas, request, "test")


def kill_schedule(kills: int, rng: random.Random) -> list[tuple[str, float]]:
    """Where to kill: once during the scan, once in the chord callback, the rest in ranges."""
    if kills == 1:
        return [(rng.choice(["scan", "ranges", "callback"]), rng.random())]
    middle = sorted(rng.random() for _ in range(max(0, kills - 2)))
    return [("scan", 0.0), *(("ranges", f) for f in middle), ("callback", 1.0)][:kills]


def holds_task(env: dict[str, str], name: str) -> bool:
    """A worker received a task named ``name`` and has not acknowledged it."""
    import redis

    client = redis.Redis.from_url(env["INGEST_REDIS_URL"])
    try:
        return any(f'"task": "{name}"'.encode() in v for v in client.hvals("unacked"))
    finally:
        client.close()


def reached(env: dict[str, str], import_id: str, phase: str, fraction: float) -> bool:
    state = import_state(env, import_id)
    if state.get("status") in ("succeeded", "failed"):
        return True
    ranges = state.get("ranges", {})
    if phase == "scan":
        return state.get("status") == "running" or holds_task(env, "ingest.s3.scan")
    total = ranges.get("total") or 0
    if phase == "callback":
        return bool(total) and ranges["done"] + ranges["failed"] >= total
    return bool(total) and ranges["done"] >= fraction * total


@pytest.mark.parametrize("kills", [FAULT_KILLS])
def test_worker_kills_at_random_moments_of_an_import(
    stack_env: dict[str, str],
    procs: ProcessGroup,
    s3_client: Any,
    bucket: str,
    sink_dir: Path,
    kills: int,
) -> None:
    seed = int(os.environ.get("FAULT_TIER_SEED") or random.randrange(1 << 30))
    print(f"kill schedule seed: {seed} (FAULT_TIER_SEED={seed} repeats it)")
    rng = random.Random(seed)
    data = input_csv(60_000)
    s3_client.put_object(Bucket=bucket, Key="big/input.csv", Body=data)
    env = fault_env(stack_env)
    worker = procs.start_worker(env)
    import_id = submit(env, f"s3://{bucket}/big/")
    for phase, fraction in kill_schedule(kills, rng):
        wait_for(
            lambda p=phase, f=fraction: reached(env, import_id, p, f),
            120,
            0.01,
            f"{phase} at {fraction:.0%}",
        )
        worker.signal_group(signal.SIGKILL)
        assert worker.proc is not None
        worker.proc.wait(timeout=10)
        state = import_state(env, import_id)
        print(f"killed in {phase}: {state.get('status')} {state.get('ranges')}")
        worker = procs.start_worker(env)

    state = wait_finished(env, import_id, 180, "the import to finish after the kills")
    assert_every_row_once(state, data, sink_dir)
