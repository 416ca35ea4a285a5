"""A range that runs twice (at-least-once delivery) leaves the sink as if it ran once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ingest.sinks import SinkError
from tests.support.golden import FIXTURES
from tests.support.ranges import processor, spec_for, stored_hashes

pytestmark = pytest.mark.faults


def test_running_a_range_twice_stores_it_once(
    stack_env: dict[str, str], s3_client: Any, bucket: str, sink_dir: Path
) -> None:
    data = (FIXTURES / "entities" / "clean.csv").read_bytes()
    s3_client.put_object(Bucket=bucket, Key="clean.csv", Body=data)
    proc, rt = processor(stack_env)
    first = proc.process(spec_for(bucket, "clean.csv", data, "range-a"))
    files_after_first = sorted(p.name for p in sink_dir.rglob("*.parquet"))
    second = proc.process(spec_for(bucket, "clean.csv", data, "range-a"))
    assert first.rowsStored == 20 and second.resumed and second.rowsStored == 20
    assert sorted(p.name for p in sink_dir.rglob("*.parquet")) == files_after_first
    assert len(stored_hashes(rt)) == len(set(stored_hashes(rt))) == 20


def test_dedup_claims_never_drop_rows_of_a_run_that_crashed_before_writing(
    stack_env: dict[str, str],
    s3_client: Any,
    bucket: str,
    sink_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = (FIXTURES / "entities" / "clean.csv").read_bytes()
    s3_client.put_object(Bucket=bucket, Key="clean.csv", Body=data)
    proc, rt = processor(stack_env)
    real_write = rt.sink.write_table

    def crash(*_: Any) -> Any:
        raise SinkError("worker died before the write")

    monkeypatch.setattr(rt.sink, "write_table", crash)
    with pytest.raises(SinkError):
        proc.process(spec_for(bucket, "clean.csv", data, "range-b"))
    assert stored_hashes(rt) == []

    # The same range again (redelivered): its own claims must not make its rows duplicates.
    monkeypatch.setattr(rt.sink, "write_table", real_write)
    again = proc.process(spec_for(bucket, "clean.csv", data, "range-b"))
    assert again.rowsStored == 20 and again.duplicatesDropped == 0
    assert len(set(stored_hashes(rt))) == 20

    # Another range with the same rows is a duplicate of what is stored, as it should be.
    other = proc.process(spec_for(bucket, "clean.csv", data, "range-c"))
    assert other.rowsStored == 0 and other.duplicatesDropped == 20
    assert len(stored_hashes(rt)) == 20
