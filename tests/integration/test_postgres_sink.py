"""The PostgreSQL sink against a real server: idempotent batches, round trips, verify and init."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pytest

from devstack import free_port
from ingest.provenance import ProvenanceBuilder
from ingest.provenance.verify import records_at, verify_records
from ingest.sinks import SinkError, open_sink
from ingest.sinks.postgres import PostgresSink
from tests.support.pg_fixtures import with_table

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def events(n: int, start: int = 0, source: str = "acme") -> list[dict[str, Any]]:
    builder = ProvenanceBuilder(
        source_id=source,
        source_type="HTTP",
        source_uri=f"http://h/{source}",
        purpose="p",
        classification="internal",
        ingested_by=source,
        batch_id="b1",
    )
    out = []
    for i in range(start, start + n):
        data = {"id": i, "kind": "ping", "score": i / 10, "tags": ["a", "b"], "text": 'q"\\\n%'}
        _, prov = builder.stamp_event(data, observed_at="2026-01-02T03:04:05Z")
        out.append({"data": data, "provenance": prov})
    return out


def entities_table(n: int) -> pa.Table:
    """A table shaped like the S3 import's: 9 data columns, its provenance fields."""
    rng = np.random.default_rng(7)
    data = pa.table(
        {
            "id": [f"e{i:07d}" for i in range(n)],
            "name": pa.array([f"Entity {i}" for i in range(n)], type=pa.large_string()),
            "category": np.array(["person", "organization", "event", "other"])[
                rng.integers(0, 4, n)
            ],
            "country": np.array(["DE", "FR", "US", "GB"])[rng.integers(0, 4, n)],
            "note": [f'note about {i}, with "quotes"' for i in range(n)],
            "score": rng.random(n).round(2),
            "lat": rng.random(n) * 180 - 90,
            "lon": rng.random(n) * 360 - 180,
            "timestamp": pa.array(
                1_776_000_000_000_000 + rng.integers(0, 10**13, n) // 1_000_000 * 1_000_000,
                type=pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    builder = ProvenanceBuilder(
        source_id="bucket/entities.csv",
        source_type="S3",
        source_uri="s3://bucket/entities.csv",
        purpose="golden-test",
        classification="test",
        ingested_by="tester",
        batch_id="r" * 40,
        transformations=("schema:entities@1",),
    )
    columns = {}
    for key, value in builder.common().items():
        kind = pa.list_(pa.string()) if isinstance(value, list) else pa.string()
        columns[key] = pa.array([value] * n, type=kind)
    columns["contentHash"] = pa.array([hashlib.sha256(b"%d" % i).hexdigest() for i in range(n)])
    columns["observedAt"] = pa.array(["2026-04-13T03:39:33Z"] * n)
    columns["objectEtag"] = pa.array(['"abc"'] * n)
    columns["lineNumber"] = pa.array(np.arange(2, n + 2))
    columns["byteOffset"] = pa.array(np.arange(n) * 90)
    provenance = pa.StructArray.from_arrays(list(columns.values()), list(columns))
    return pa.table({"data": data.to_struct_array(), "provenance": provenance})


def stored(sink: Any) -> list[dict[str, Any]]:
    return [r.record for r in sink.iter_records()]


class TestWrites:
    def test_records_round_trip_with_their_provenance(self, pg_sink_uri: str) -> None:
        sink = open_sink(pg_sink_uri)
        assert isinstance(sink, PostgresSink)
        records = events(3)
        result = sink.write_records("webhooks/acme/b1", records)
        assert (result.new, result.present) == (3, 0)
        assert result.location.endswith("#webhooks/acme/b1")
        assert stored(sink) == records

    def test_same_batch_twice_is_stored_once(self, pg_sink_uri: str) -> None:
        sink = open_sink(pg_sink_uri)
        sink.write_records("b/1", events(3))
        again = sink.write_records("b/1", events(3))
        assert (again.new, again.present) == (0, 3)
        assert len(stored(sink)) == 3
        assert sink.exists("b/1") and not sink.exists("b/2")

    def test_same_content_in_another_batch_is_kept(self, pg_sink_uri: str) -> None:
        # Content dedup is upstream's job (within its scope); the sink only drops redeliveries.
        sink = open_sink(pg_sink_uri)
        sink.write_records("b/1", events(2))
        assert sink.write_records("b/2", events(2)).new == 2
        assert len(stored(sink)) == 4

    def test_table_round_trip(self, pg_sink_uri: str) -> None:
        sink = open_sink(pg_sink_uri)
        table = entities_table(50)
        assert sink.write_table("s3/bucket/r1-0000", table).new == 50
        again = sink.write_table("s3/bucket/r1-0000", table)
        assert (again.new, again.present) == (0, 50)
        records = stored(sink)
        expected = table.to_pylist()
        assert len(records) == 50
        first, want = records[0], expected[0]
        assert first["data"]["timestamp"] == want["data"]["timestamp"].isoformat().replace(
            "+00:00", "Z"
        )
        assert {k: v for k, v in first["data"].items() if k != "timestamp"} == {
            k: v for k, v in want["data"].items() if k != "timestamp"
        }
        assert first["provenance"] == want["provenance"]
        assert verify_records(sink.iter_records()).ok

    def test_empty_batch_counts_as_stored(self, pg_sink_uri: str) -> None:
        sink = open_sink(pg_sink_uri)
        result = sink.write_table("s3/bucket/empty-0000", entities_table(0))
        assert (result.new, result.present) == (0, 0)
        assert sink.exists("s3/bucket/empty-0000")

    def test_provenance_columns_are_filled(self, pg_sink_uri: str, postgres_url: str) -> None:
        sink = open_sink(pg_sink_uri)
        sink.write_table("s3/bucket/r1-0000", entities_table(2))
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute(
                f"SELECT batch_name, ordinal, content_hash, source_id, source_type, purpose, "
                f"classification, ingested_at, observed_at, batch_id FROM {sink.table} "
                "ORDER BY ordinal LIMIT 1"
            ).fetchone()
        assert row is not None
        assert row[:7] == (
            "s3/bucket/r1-0000",
            0,
            hashlib.sha256(b"0").hexdigest(),
            "bucket/entities.csv",
            "S3",
            "golden-test",
            "test",
        )
        assert isinstance(row[7], dt.datetime) and row[7].tzinfo is not None
        assert row[8] == dt.datetime(2026, 4, 13, 3, 39, 33, tzinfo=dt.UTC)
        assert row[9] == "r" * 40

    def test_observed_at_postgresql_cannot_read_is_left_null(
        self, pg_sink_uri: str, postgres_url: str
    ) -> None:
        # Python's fromisoformat() takes ISO week dates; PostgreSQL does not.
        records = events(2)
        records[0]["provenance"]["observedAt"] = "2026-W15-1"
        sink = open_sink(pg_sink_uri)
        assert sink.write_records("b/weeks", records).new == 2
        with psycopg.connect(postgres_url) as conn:
            rows = conn.execute(
                f"SELECT observed_at FROM {sink.table} ORDER BY ordinal"  # type: ignore[attr-defined]
            ).fetchall()
        assert rows == [(None,), (dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),)]
        assert stored(sink)[0]["provenance"]["observedAt"] == "2026-W15-1"

    def test_a_failing_batch_stores_nothing(self, pg_sink_uri: str) -> None:
        sink = open_sink(pg_sink_uri)
        records = events(3)
        del records[2]["provenance"]["contentHash"]
        with pytest.raises(psycopg.errors.NotNullViolation):
            sink.write_records("b/bad", records)
        assert not sink.exists("b/bad") and stored(sink) == []

    def test_concurrent_writers_of_one_batch_store_it_once(self, pg_sink_uri: str) -> None:
        # Separate sinks, as separate worker processes have: first use races on CREATE TABLE too.
        results = []

        def write() -> None:
            results.append(open_sink(pg_sink_uri).write_table("s3/b/race-0000", table))

        table = entities_table(500)
        threads = [threading.Thread(target=write) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(r.new for r in results) == [0] * 5 + [500]
        assert sum(r.present for r in results) == 5 * 500
        assert len(stored(open_sink(pg_sink_uri))) == 500

    def test_schema_qualified_table(self, postgres_url: str) -> None:
        schema = f"s_{os.getpid()}_{int(time.time() * 1000) % 100000}"
        sink = open_sink(with_table(postgres_url, f"{schema}.records"))
        try:
            assert sink.write_records("b/1", events(1)).new == 1
            assert len(stored(sink)) == 1
        finally:
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")

    @pytest.mark.parametrize("table", ["bad-name", "a.b.c", "x;drop", ""])
    def test_invalid_table_names_are_refused(self, postgres_url: str, table: str) -> None:
        with pytest.raises(ValueError, match="invalid sink table"):
            open_sink(with_table(postgres_url, table))


class TestUnreachable:
    def test_check_raises_sink_error(self) -> None:
        sink = open_sink(f"postgresql://postgres:secret@127.0.0.1:{free_port()}/ingest")
        with pytest.raises(SinkError) as info:
            sink.check()
        assert "secret" not in str(info.value)

    def test_writes_raise_sink_error(self) -> None:
        sink = open_sink(f"postgresql://postgres@127.0.0.1:{free_port()}/ingest")
        with pytest.raises(SinkError):
            sink.write_records("b/1", events(1))

    def test_check_passes_when_reachable(self, pg_sink_uri: str) -> None:
        open_sink(pg_sink_uri).check()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        env={"PATH": os.environ["PATH"], **(env or {})},
    )


class TestVerify:
    def test_clean_sink_verifies(self, pg_sink_uri: str) -> None:
        sink = open_sink(pg_sink_uri)
        sink.write_records("a", events(5))
        sink.write_records("b", events(5, 5))
        assert verify_records(records_at(pg_sink_uri)).hashes_recomputed == 10
        result = run_cli("provenance", "verify", pg_sink_uri)
        assert result.returncode == 0, result.stderr
        assert "10 records checked, 10 hashes recomputed, 0 problems" in result.stdout

    def test_tampered_row_fails(self, pg_sink_uri: str, postgres_url: str) -> None:
        sink = open_sink(pg_sink_uri)
        sink.write_records("a", events(3))
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(
                f"UPDATE {sink.table} SET data = jsonb_set(data, '{{kind}}', '\"tampered\"') "
                "WHERE ordinal = 1"
            )
        result = run_cli("provenance", "verify", pg_sink_uri)
        assert result.returncode == 1
        assert "#a/1 record 2: contentHash does not match" in result.stdout
        assert result.stderr.strip() == "ingest: 1 provenance problems found"

    def test_unreachable_database_is_a_usage_error(self) -> None:
        from click.testing import CliRunner

        from cli.main import main

        target = f"postgresql://x@127.0.0.1:{free_port()}/db"
        result = CliRunner().invoke(main, ["provenance", "verify", target])
        assert result.exit_code == 2 and "PostgreSQL sink" in result.stderr


class TestInitCommand:
    def invoke(self, *args: str, env: dict[str, str] | None = None) -> Any:
        from click.testing import CliRunner

        from cli.main import main

        return CliRunner().invoke(main, ["sink", "init", *args], env=env)

    def test_creates_tables_once(self, pg_sink_uri: str, postgres_url: str) -> None:
        first = self.invoke(env={"INGEST_SINK_URI": pg_sink_uri})
        assert first.exit_code == 0, first.output
        assert "created" in first.stdout
        second = self.invoke("--uri", pg_sink_uri)
        assert second.exit_code == 0 and "already present" in second.stdout
        table = open_sink(pg_sink_uri).table  # type: ignore[attr-defined]
        with psycopg.connect(postgres_url) as conn:
            names = conn.execute(
                "SELECT to_regclass(%s), to_regclass(%s)", [str(table), f"{table}_batches"]
            ).fetchone()
        assert names is not None and None not in names

    def test_prints_ddl(self, pg_sink_uri: str) -> None:
        result = self.invoke("--sql", "--uri", pg_sink_uri)
        assert result.exit_code == 0
        assert "PRIMARY KEY (batch_name, ordinal)" in result.stdout

    def test_file_sink_gets_its_directory(self, tmp_path: Path) -> None:
        target = tmp_path / "new" / "sink"
        result = self.invoke(env={"INGEST_SINK_URI": f"file://{target}"})
        assert result.exit_code == 0, result.output
        assert target.is_dir()

    def test_unreachable_database_fails(self) -> None:
        result = self.invoke("--uri", f"postgresql://x@127.0.0.1:{free_port()}/db")
        assert result.exit_code == 1 and "cannot initialise the sink" in result.stderr


def backend_cpu(pid: int) -> float:
    """CPU seconds of a local server process so far (0 when it is not on this machine)."""
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        return 0.0
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(
    not os.environ.get("INGEST_BENCH_ROWS"), reason="set INGEST_BENCH_ROWS to measure"
)
def test_write_table_throughput(pg_sink_uri: str) -> None:
    """``INGEST_BENCH_ROWS=300000 pytest -s -k throughput``: rows/s of write_table."""
    rows = int(os.environ["INGEST_BENCH_ROWS"])
    table = entities_table(rows)
    sink = open_sink(pg_sink_uri)
    sink.write_table("warm-up", table.slice(0, 10))
    backend = sink._connection().info.backend_pid  # type: ignore[attr-defined]
    for attempt in range(3):
        started, cpu, server = time.perf_counter(), time.process_time(), backend_cpu(backend)
        assert sink.write_table(f"s3/bench/r{attempt}-0000", table).new == rows
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        server = backend_cpu(backend) - server
        print(
            f"\nwrite_table {rows} rows: {wall:.2f}s wall = {rows / wall:,.0f} rows/s; "
            f"CPU: client {cpu:.2f}s ({rows / cpu:,.0f} rows/s), "
            f"server {server:.2f}s ({rows / max(server, 1e-9):,.0f} rows/s)"
        )
    started = time.perf_counter()
    assert sink.write_table("s3/bench/r0-0000", table).present == rows
    print(f"redelivery of {rows} rows: {time.perf_counter() - started:.3f}s")
