"""Deduplication by configured key fields across ranges and objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from devstack import free_port
from ingest.dedup import DedupIndex
from tests.support.ranges import processor, spec_for, stored_hashes

pytestmark = pytest.mark.integration

HEADER = b"id,timestamp,name,category,score\n"


def test_key_fields_drop_rows_with_the_same_keys(
    stack_env: dict[str, str], s3_client: Any, bucket: str, sink_dir: Path
) -> None:
    env = dict(stack_env, INGEST_S3CSV__DEDUPLICATION__KEY_FIELDS='["id", "timestamp"]')
    first = HEADER + (
        b"e1,2026-01-01T00:00:00Z,First,person,0.1\n"
        b"e2,2026-01-01T00:00:00Z,Other,person,0.2\n"
        b"e1,2026-01-01T00:00:00Z,Renamed,person,0.9\n"
    )
    second = HEADER + (
        b"e1,2026-01-01T00:00:00+00:00,Same instant,person,0.3\n"
        b"e1,2026-01-02T00:00:00Z,Next day,person,0.3\n"
    )
    s3_client.put_object(Bucket=bucket, Key="a.csv", Body=first)
    s3_client.put_object(Bucket=bucket, Key="b.csv", Body=second)
    proc, rt = processor(env)
    one = proc.process(spec_for(bucket, "a.csv", first, "range-a"))
    two = proc.process(spec_for(bucket, "b.csv", second, "range-b"))
    assert (one.rowsStored, one.duplicatesDropped) == (2, 1)
    assert (two.rowsStored, two.duplicatesDropped) == (1, 1)  # same instant, other notation
    names = sorted(r.record["data"]["name"] for r in rt.sink.iter_records())
    assert names == ["First", "Next day", "Other"]
    assert len(stored_hashes(rt)) == 3


@pytest.mark.parametrize("overlap", [True, False])
def test_claims_on_their_own_thread_store_what_claims_in_line_store(
    stack_env: dict[str, str], s3_client: Any, bucket: str, sink_dir: Path, overlap: bool
) -> None:
    """The keys are claimed while the records are hashed, or one after the other (the
    step-by-step profile): the same rows are stored, with their content hashes."""
    body = HEADER + b"".join(
        b"e%d,2026-01-01T00:00:00Z,Name %d,person,0.5\n" % (n % 7, n) for n in range(20)
    )
    s3_client.put_object(Bucket=bucket, Key="k.csv", Body=body)
    env = dict(stack_env, INGEST_S3CSV__DEDUPLICATION__KEY_FIELDS='["id"]')
    proc, rt = processor(env)
    proc.overlap_claims = overlap
    summary = proc.process(spec_for(bucket, "k.csv", body, f"range-{overlap}"))
    assert (summary.rowsStored, summary.duplicatesDropped) == (7, 13)
    names = sorted(r.record["data"]["name"] for r in rt.sink.iter_records())
    assert names == [f"Name {n}" for n in range(7)]
    assert len(stored_hashes(rt)) == 7


def test_a_claim_that_fails_on_its_thread_fails_the_range_and_stores_nothing(
    stack_env: dict[str, str], s3_client: Any, bucket: str, sink_dir: Path
) -> None:
    body = HEADER + b"e1,2026-01-01T00:00:00Z,One,person,0.1\n"
    s3_client.put_object(Bucket=bucket, Key="f.csv", Body=body)
    env = dict(stack_env, INGEST_S3CSV__DEDUPLICATION__KEY_FIELDS='["id"]')
    proc, rt = processor(env)
    working = proc.dedup
    assert working is not None
    closed = redis.Redis(port=free_port(), socket_connect_timeout=0.5)
    proc.dedup = DedupIndex(closed, ttl_seconds=3600)
    with pytest.raises(redis.ConnectionError):
        proc.process(spec_for(bucket, "f.csv", body, "range-f"))
    assert list(rt.sink.iter_records()) == []
    proc.dedup = working  # Redis is back: the task's retry stores the row once
    assert proc.process(spec_for(bucket, "f.csv", body, "range-f")).rowsStored == 1
    assert [r.record["data"]["name"] for r in rt.sink.iter_records()] == ["One"]
