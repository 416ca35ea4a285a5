"""The file sink: atomic files, one copy per batch identity, and the provenance verifier."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from ingest.provenance import ProvenanceBuilder
from ingest.provenance.verify import records_at, verify_records
from ingest.sinks import FileSink, open_sink

ROOT = Path(__file__).resolve().parents[4]


def events(n: int, start: int = 0) -> list[dict[str, object]]:
    builder = ProvenanceBuilder(
        source_id="acme",
        source_type="HTTP",
        source_uri="http://h/x",
        purpose="p",
        ingested_by="acme",
        batch_id="b",
    )
    out = []
    for i in range(start, start + n):
        data = {"id": i, "kind": "ping"}
        _, prov = builder.stamp_event(data)
        out.append({"data": data, "provenance": prov})
    return out


class TestWrites:
    def test_records_are_written_as_jsonl(self, sink_dir: Path) -> None:
        sink = FileSink(f"file://{sink_dir}")
        result = sink.write_records("webhooks/acme/batch-1", events(3))
        assert (result.new, result.present) == (3, 0)
        lines = (sink_dir / "webhooks/acme/batch-1.jsonl").read_text().splitlines()
        assert [json.loads(line)["data"]["id"] for line in lines] == [0, 1, 2]

    def test_same_batch_twice_is_stored_once(self, sink_dir: Path) -> None:
        sink = FileSink(f"file://{sink_dir}")
        sink.write_records("b/1", events(3))
        again = sink.write_records("b/1", events(3))
        assert (again.new, again.present) == (0, 3)
        assert sum(1 for _ in sink.iter_records()) == 3
        assert sink.exists("b/1") and not sink.exists("b/2")

    def test_concurrent_writers_of_one_batch_leave_one_file(self, sink_dir: Path) -> None:
        sink = FileSink(f"file://{sink_dir}")
        threads = [
            threading.Thread(target=sink.write_records, args=("b/race", events(50)))
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [p.name for p in (sink_dir / "b").iterdir()] == ["race.jsonl"]
        assert sum(1 for _ in sink.iter_records()) == 50

    def test_no_partial_file_is_ever_visible(
        self, sink_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        sink = FileSink(f"file://{sink_dir}")

        def crash(*_: object) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(os, "replace", crash)
        with pytest.raises(Exception, match="disk full"):
            sink.write_records("b/crash", events(2))
        assert not sink.exists("b/crash")
        assert list(sink.iter_records()) == []

    def test_table_is_written_as_parquet_with_data_and_provenance(self, sink_dir: Path) -> None:
        sink = FileSink(f"file://{sink_dir}")
        rows = events(4)
        table = pa.Table.from_pylist(rows)
        assert sink.write_table("s3/range-1", table).new == 4
        assert sink.write_table("s3/range-1", table).present == 4
        stored = [r.record for r in sink.iter_records()]
        assert [r["data"]["id"] for r in stored] == [0, 1, 2, 3]

    def test_parquet_layout_keeps_the_values(self, sink_dir: Path) -> None:
        # Required groups, a delta-length hash column and dictionary steps are physical
        # choices only: the records read back are the ones written, next to older files.
        import pyarrow.parquet as pq

        sink = FileSink(f"file://{sink_dir}")
        rows = events(3)
        table = pa.Table.from_pylist(rows)
        steps = pa.array(
            [["schema:x@1"]] * 3, type=pa.list_(pa.dictionary(pa.int32(), pa.string()))
        )
        provenance = table.column("provenance").combine_chunks()
        fields = [f for f in provenance.type if f.name != "transformations"]
        arrays = [provenance.field(f.name) for f in fields] + [steps]
        names = [f.name for f in fields] + ["transformations"]
        table = pa.table(
            {"data": table.column("data"), "provenance": pa.StructArray.from_arrays(arrays, names)}
        )
        sink.write_table("s3/new", table)
        pq.write_table(pa.Table.from_pylist(events(1, 3)), sink_dir / "s3" / "old.parquet")
        path = sink_dir / "s3" / "new.parquet"
        schema = pq.ParquetFile(path).schema
        assert "required group field_id=-1 provenance" in str(schema)
        column = [schema.column(i).path for i in range(len(schema))].index("provenance.contentHash")
        encodings = pq.ParquetFile(path).metadata.row_group(0).column(column).encodings
        assert "DELTA_LENGTH_BYTE_ARRAY" in encodings
        stored = pq.read_table(path).to_pylist()
        assert [r["provenance"]["contentHash"] for r in stored] == [
            r["provenance"]["contentHash"] for r in rows
        ]
        assert {tuple(r["provenance"]["transformations"]) for r in stored} == {("schema:x@1",)}
        together = pq.read_table(sink_dir / "s3")  # old and new files as one dataset
        assert sorted(r["data"]["id"] for r in together.to_pylist()) == [0, 1, 2, 3]

    @pytest.mark.parametrize("name", ["", "../escape", "a/../../b", "/"])
    def test_batch_names_cannot_escape_the_root(self, sink_dir: Path, name: str) -> None:
        with pytest.raises(ValueError):
            FileSink(f"file://{sink_dir}").write_records(name, events(1))

    def test_unsupported_uri(self) -> None:
        with pytest.raises(ValueError, match="unsupported sink URI"):
            open_sink("ftp://x")


class TestVerify:
    def run_verify(self, target: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli.main", "provenance", "verify", target],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
            env={"PATH": os.environ["PATH"]},
        )

    def test_clean_sink_verifies(self, sink_dir: Path) -> None:
        sink = FileSink(f"file://{sink_dir}")
        sink.write_records("a", events(5))
        sink.write_records("b", events(5, 5))
        report = verify_records(records_at(str(sink_dir)))
        assert report.ok and report.records == 10 and report.hashes_recomputed == 10
        result = self.run_verify(f"file://{sink_dir}")
        assert result.returncode == 0, result.stderr
        assert "10 records checked" in result.stdout

    def test_tampered_record_fails(self, sink_dir: Path) -> None:
        records = events(3)
        records[1]["data"] = {"id": 1, "kind": "tampered"}
        FileSink(f"file://{sink_dir}").write_records("a", records)
        result = self.run_verify(str(sink_dir))
        assert result.returncode == 1
        assert "contentHash does not match" in result.stdout
        assert result.stderr.strip() == "ingest: 1 provenance problems found"

    def test_invalid_provenance_fails(self, sink_dir: Path) -> None:
        records = events(2)
        del records[0]["provenance"]["purpose"]  # type: ignore[attr-defined]
        FileSink(f"file://{sink_dir}").write_records("a", records)
        result = self.run_verify(str(sink_dir / "a.jsonl"))
        assert result.returncode == 1 and "purpose" in result.stdout

    def test_missing_path_is_a_usage_error(self, tmp_path: Path) -> None:
        result = self.run_verify(str(tmp_path / "nothing"))
        assert result.returncode == 2 and "no such file" in result.stderr
