"""Golden fixtures imported by a real worker from the local S3 server, checked row for row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from ingest.dlq import DeadLetterQueue
from ingest.provenance.verify import records_at, verify_records
from ingest.sinks import FileSink
from tests.support.golden import EXPECTED, FIXTURES, run_import, upload_fixtures
from tests.support.processes import ProcessGroup

pytestmark = pytest.mark.integration


def normalise(data: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    ts = out["timestamp"]
    out["timestamp"] = ts.isoformat().replace("+00:00", "Z") if hasattr(ts, "isoformat") else ts
    return out


@pytest.fixture()
def golden_env(stack_env: dict[str, str]) -> dict[str, str]:
    return dict(stack_env, INGEST_S3CSV__RANGE_SIZE=str(EXPECTED["rangeSize"]))


def check_state(state: dict[str, Any]) -> None:
    """The import's final state matches the expected output of the golden fixtures."""
    assert state["status"] == "succeeded", state
    assert state["objects"] == len(list((FIXTURES / "entities").iterdir()))
    assert state["bytesProcessed"] == state["bytesTotal"] > 0
    for name, value in EXPECTED["counts"].items():
        assert state[name] == value, name


def check_stored(records: list[dict[str, Any]], bucket: str, prefix: str) -> None:
    """Every stored record, row for row against the expected output, for any sink."""
    by_hash = {r["provenance"]["contentHash"]: r for r in records}
    assert len(by_hash) == len(records) == EXPECTED["counts"]["rowsStored"]
    for expected in EXPECTED["stored"]:
        record = by_hash[expected["contentHash"]]
        assert normalise(record["data"]) == expected["data"]
        prov = record["provenance"]
        key = prov["sourceUri"].removeprefix(f"s3://{bucket}/{prefix}")
        assert [key, prov["lineNumber"]] in expected["candidates"]
        assert prov["sourceType"] == "S3" and prov["purpose"] == "golden-test"
        assert prov["classification"] == "test" and prov["objectEtag"]
        assert prov["observedAt"] == expected["data"]["timestamp"]
        assert prov["transformations"] == ["schema:entities@1"]


def check_rejected(redis_url: str, import_id: str) -> None:
    """The rejected rows are in the DLQ with their object and line, and a reason."""
    dlq = DeadLetterQueue(redis.Redis.from_url(redis_url))
    rows = dlq.list(limit=100, kind="row", import_id=import_id)
    got = sorted((e.payload["objectUri"].rsplit("/", 1)[1], e.payload["line"]) for e in rows)
    assert got == sorted((r["key"], r["line"]) for r in EXPECTED["rejected"])
    assert all(e.reason for e in rows)


def test_golden_fixtures_import_row_for_row(
    golden_env: dict[str, str], procs: ProcessGroup, s3_client: Any, bucket: str, sink_dir: Path
) -> None:
    upload_fixtures(s3_client, bucket, "golden/")
    procs.start_worker(golden_env)
    state = run_import(golden_env, f"s3://{bucket}/golden/")

    check_state(state)
    assert state["ranges"]["total"] > state["objects"], "large.csv must split into ranges"
    check_stored(
        [r.record for r in FileSink(f"file://{sink_dir}").iter_records()], bucket, "golden/"
    )
    assert verify_records(records_at(str(sink_dir))).ok
    check_rejected(golden_env["INGEST_REDIS_URL"], state["importId"])


def test_reimport_resumes_and_stores_nothing_twice(
    golden_env: dict[str, str], procs: ProcessGroup, s3_client: Any, bucket: str, sink_dir: Path
) -> None:
    upload_fixtures(s3_client, bucket, "again/")
    procs.start_worker(golden_env)
    first = run_import(golden_env, f"s3://{bucket}/again/")
    second = run_import(golden_env, f"s3://{bucket}/again/")
    assert first["status"] == second["status"] == "succeeded"
    assert second["ranges"]["resumed"] == second["ranges"]["total"]
    assert (
        sum(1 for _ in FileSink(f"file://{sink_dir}").iter_records())
        == EXPECTED["counts"]["rowsStored"]
    )
