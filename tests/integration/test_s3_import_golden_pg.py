"""The golden S3 import again, stored in PostgreSQL: the same rows, provenance and counts."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from ingest.dlq import DeadLetterQueue
from ingest.sinks import open_sink
from ingest.verify import records_at, verify_records
from tests.integration.test_s3_import_golden import (
    EXPECTED,
    FIXTURES,
    normalise,
    run_import,
    upload_fixtures,
)
from tests.processes import ProcessGroup

pytestmark = pytest.mark.integration


@pytest.fixture()
def pg_golden_env(stack_env: dict[str, str], pg_sink_uri: str) -> dict[str, str]:
    """golden_env of test_s3_import_golden, with the sink in PostgreSQL."""
    range_size = str(EXPECTED["rangeSize"])
    return dict(stack_env, INGEST_S3CSV__RANGE_SIZE=range_size, INGEST_SINK_URI=pg_sink_uri)


def check_stored(records: list[dict[str, Any]], bucket: str, prefix: str) -> None:
    """The assertions of test_s3_import_golden on stored records, for any sink."""
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


def test_golden_import_into_postgres_row_for_row_and_once(
    pg_golden_env: dict[str, str],
    pg_sink_uri: str,
    procs: ProcessGroup,
    s3_client: Any,
    bucket: str,
) -> None:
    upload_fixtures(s3_client, bucket, "golden/")
    procs.start_worker(pg_golden_env)
    state = run_import(pg_golden_env, f"s3://{bucket}/golden/")

    assert state["status"] == "succeeded", state
    assert state["objects"] == len(list((FIXTURES / "entities").iterdir()))
    assert state["bytesProcessed"] == state["bytesTotal"] > 0
    for name, value in EXPECTED["counts"].items():
        assert state[name] == value, name
    sink = open_sink(pg_sink_uri)
    check_stored([r.record for r in sink.iter_records()], bucket, "golden/")
    assert verify_records(records_at(pg_sink_uri)).ok

    dlq = DeadLetterQueue(redis.Redis.from_url(pg_golden_env["INGEST_REDIS_URL"]))
    rows = dlq.list(limit=100, kind="row", import_id=state["importId"])
    got = sorted((e.payload["objectUri"].rsplit("/", 1)[1], e.payload["line"]) for e in rows)
    assert got == sorted((r["key"], r["line"]) for r in EXPECTED["rejected"])

    # The same import again: every range resumes and PostgreSQL holds each row once.
    again = run_import(pg_golden_env, f"s3://{bucket}/golden/")
    assert again["status"] == "succeeded"
    assert again["ranges"]["resumed"] == again["ranges"]["total"]
    assert sum(1 for _ in sink.iter_records()) == EXPECTED["counts"]["rowsStored"]
