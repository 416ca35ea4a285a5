"""S3 errors, throttling and dropped connections during an import: retried, breaker, success."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from ingest.s3csv.planning import HEADER_LOOK
from ingest.sinks import FileSink
from tests.faults.s3_fault_proxy import FaultProxy, Mode, Seen
from tests.faults.test_worker_kill import import_state
from tests.support.golden import EXPECTED, FIXTURES
from tests.support.processes import ProcessGroup
from tests.support.services import ManagedProcess, wait_for

pytestmark = pytest.mark.faults

LARGE = FIXTURES / "entities" / "large.csv"
# The golden expectations cover every fixture; these are the rows of large.csv alone.
LARGE_HASHES = {
    row["contentHash"]
    for row in EXPECTED["stored"]
    if any(name == "large.csv" for name, _ in row["candidates"])
}
BREAKER_OPEN = "is open after repeated failures"  # CircuitOpenError's message


def log_text(proc: ManagedProcess) -> str:
    assert proc.log_path is not None
    return proc.log_path.read_text(errors="replace")


def submit(env: dict[str, str], uri: str) -> str:
    from ingest.config import load_settings
    from ingest.runtime import Runtime
    from tasks.imports import submit_import

    rt = Runtime(load_settings(env))
    request = {"uri": uri, "schema": "entities", "purpose": "fault-test"}
    return submit_import(rt.settings, rt.redis, rt.schemas, request, "test")


def test_s3_faults_during_an_import_are_retried_through_the_breaker(
    stack_env: dict[str, str], procs: ProcessGroup, s3_client: Any, bucket: str, sink_dir: Path
) -> None:
    assert len(LARGE_HASHES) == 3000
    data = LARGE.read_bytes()
    s3_client.put_object(Bucket=bucket, Key="faults/large.csv", Body=data)  # straight to S3

    with FaultProxy(stack_env["INGEST_S3_ENDPOINT_URL"]) as proxy:
        env = dict(
            stack_env,
            INGEST_S3_ENDPOINT_URL=proxy.url,
            INGEST_S3CSV__RANGE_SIZE="65536",
            INGEST_S3CSV__MAX_RETRIES="100",
            INGEST_S3CSV__RETRY_BACKOFF_MAX="1",
            INGEST_S3CSV__BREAKER_THRESHOLD="2",
            INGEST_S3CSV__BREAKER_RESET_SECONDS="1",
        )
        worker = procs.start_worker(env)
        # Only the range tasks' reads are faulted: planning reads the header with a ranged GET
        # of the object's first 64 KiB (span 0 reads more), which the proxy lets through.
        proxy.spared = frozenset({f"bytes=0-{HEADER_LOOK - 1}"})
        proxy.mode = "error500"
        import_id = submit(env, f"s3://{bucket}/faults/")

        # 500s: botocore retries each call, then the task retries; two failed calls in a
        # worker process open its breaker, and its tasks back off without calling S3.
        wait_for(lambda: BREAKER_OPEN in log_text(worker), 60, 0.1, "the breaker to open")
        for mode in ("slowdown", "close"):
            proxy.mode = mode

            def hit(mode: Mode = mode) -> bool:
                return proxy.faults()[mode] >= 3

            wait_for(hit, 60, 0.05, f"{mode} faults")
        # An outage of a few seconds: long enough that a range needs more than 3 task retries.
        proxy.mode = "error500"
        wait_for(lambda: "; retry 4 in" in log_text(worker), 60, 0.1, "a 4th task retry")
        proxy.mode = "ok"

        def outcome() -> dict[str, Any] | None:
            state = import_state(env, import_id)
            if state.get("status") in ("succeeded", "failed"):
                return state
            crashed = [ln for ln in log_text(worker).splitlines() if "raised unexpected" in ln]
            return {"status": "stuck", "crashed": crashed[:2], **state} if crashed else None

        state = wait_for(outcome, 60, 0.2, "the import to finish")

    assert state["status"] == "succeeded", state
    assert state["rowsStored"] == 3000 and state["rowsRejected"] == 0, state
    assert state["duplicatesDropped"] == 0 and state["errors"] == [], state
    assert state["bytesProcessed"] == state["bytesTotal"] == len(data)
    total = state["ranges"]["total"]
    assert total >= 3 and state["ranges"].get("failed", 0) == 0, state["ranges"]

    # Every range was faulted, asked again, and finally read through the proxy.
    per_range: dict[str | None, list[Seen]] = defaultdict(list)
    for seen in proxy.ranged():
        per_range[seen.range].append(seen)
    assert len(per_range) == total, sorted(per_range, key=str)
    for byte_range, requests in per_range.items():
        assert any(s.mode != "ok" for s in requests), f"{byte_range} was never faulted"
        assert requests[-1].mode == "ok" and requests[-1].status == 206, (byte_range, requests)
    assert set(proxy.faults()) == {"error500", "slowdown", "close"}, proxy.faults()
    header_reads = [s for s in proxy.seen if s.range in proxy.spared]
    assert header_reads and all(s.status == 206 for s in header_reads), header_reads

    # The breaker opened (tasks were told to come back instead of calling S3) and closed
    # again: ranges read through the proxy after it opened, and the import completed.
    log = log_text(worker)
    assert BREAKER_OPEN in log and "gave up" not in log
    assert " closed: the dependency answers again" in log  # the breaker closed again

    stored = [
        r.record["provenance"]["contentHash"] for r in FileSink(f"file://{sink_dir}").iter_records()
    ]
    assert len(stored) == 3000, "a row was stored twice or lost"
    assert set(stored) == LARGE_HASHES
