"""Deduplication by configured key fields across ranges and objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

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
