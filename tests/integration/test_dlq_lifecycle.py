"""The DLQ life cycle with real processes: failures land in it; the CLI lists, retries, purges."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from devstack import ROOT
from ingest.sinks import FileSink
from tests.support.golden import FIXTURES, run_import
from tests.support.processes import ProcessGroup

pytestmark = pytest.mark.integration


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def cli_json(env: dict[str, str], *args: str) -> Any:
    result = cli(env, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture()
def fast_retries(stack_env: dict[str, str]) -> dict[str, str]:
    return dict(
        stack_env,
        INGEST_S3CSV__MAX_RETRIES="2",
        INGEST_S3CSV__RETRY_BACKOFF_MAX="1",
        INGEST_S3CSV__RANGE_SIZE="65536",
    )


def test_sink_outage_then_retry_all_stores_every_record_once(
    fast_retries: dict[str, str], procs: ProcessGroup, s3_client: Any, bucket: str
) -> None:
    sink_bucket = f"sink-{uuid.uuid4().hex[:10]}"
    env = dict(fast_retries, INGEST_SINK_URI=f"s3://{sink_bucket}/records")
    for name in ("clean.csv", "large.csv"):
        s3_client.put_object(
            Bucket=bucket, Key=f"in/{name}", Body=(FIXTURES / "entities" / name).read_bytes()
        )
    procs.start_worker(env)

    failed = run_import(env, f"s3://{bucket}/in/")
    assert failed["status"] == "failed"
    assert failed["ranges"]["failed"] == failed["ranges"]["total"] >= 3
    assert failed["errors"] and failed["rowsStored"] == 0
    listed = cli_json(env, "dlq", "list", "--kind", "task")
    assert listed["depth"] == failed["ranges"]["total"]
    assert all(e["source"].startswith(f"s3://{bucket}/in/") for e in listed["entries"])

    s3_client.create_bucket(Bucket=sink_bucket)
    retried = cli(env, "dlq", "retry", "--all")
    assert retried.returncode == 0, retried.stderr + retried.stdout
    assert "0 left in the DLQ" in retried.stdout
    assert cli_json(env, "dlq", "list")["entries"] == []

    sink = FileSink(f"s3://{sink_bucket}/records", s3_client=s3_client)
    records = [r.record for r in sink.iter_records()]
    hashes = [r["provenance"]["contentHash"] for r in records]
    assert len(hashes) == len(set(hashes)) == 20 + 3000
    entry_ids = {e["id"] for e in listed["entries"]}
    assert {r["provenance"]["parentId"] for r in records} == entry_ids
    assert all(r["provenance"]["transformations"][-1] == "dlq-retry" for r in records)
    state = cli_json(env, "imports", "show", failed["importId"])
    assert state["status"] == "succeeded" and state["rowsStored"] == 3020
    assert state["bytesProcessed"] == state["bytesTotal"]


def test_malformed_rows_list_show_retry_and_purge(
    fast_retries: dict[str, str], procs: ProcessGroup, s3_client: Any, bucket: str, sink_dir: Path
) -> None:
    s3_client.put_object(
        Bucket=bucket,
        Key="bad/ragged_invalid.csv",
        Body=(FIXTURES / "entities" / "ragged_invalid.csv").read_bytes(),
    )
    procs.start_worker(fast_retries)
    state = run_import(fast_retries, f"s3://{bucket}/bad/")
    assert state["status"] == "succeeded" and state["rowsRejected"] == 8

    rows = cli_json(fast_retries, "dlq", "list", "--kind", "row")["entries"]
    assert len(rows) == 8
    shown = cli(fast_retries, "dlq", "show", rows[0]["id"])
    assert shown.returncode == 0
    entry = json.loads(shown.stdout)
    assert entry["payload"]["line"] == 3 and entry["payload"]["rawText"].startswith("e00601,")
    assert entry["payload"]["objectUri"] == f"s3://{bucket}/bad/ragged_invalid.csv"

    again = cli(fast_retries, "dlq", "retry", rows[0]["id"])
    assert again.returncode == 1  # still ragged: it stays, with one more attempt
    assert json.loads(cli(fast_retries, "dlq", "show", rows[0]["id"]).stdout)["attempts"] == 2

    assert cli(fast_retries, "dlq", "show", "no-such-id").returncode == 1
    assert cli(fast_retries, "dlq", "purge", "--all").returncode == 2  # --yes required
    assert cli(fast_retries, "dlq", "retry").returncode == 2  # ids or --all
    backup = sink_dir.parent / "dlq.jsonl"
    assert cli(fast_retries, "dlq", "export", str(backup)).returncode == 0
    assert len(backup.read_text().splitlines()) == 8
    purged = cli(fast_retries, "dlq", "purge", "--all", "--yes")
    assert purged.returncode == 0 and "purged 8 entries" in purged.stdout
    assert cli_json(fast_retries, "dlq", "list")["depth"] == 0
    restored = cli(fast_retries, "dlq", "import", str(backup))
    assert restored.returncode == 0 and "imported 8 entries" in restored.stdout
    assert cli_json(fast_retries, "dlq", "list")["depth"] == 8


def test_failed_scan_ends_the_import_failed_and_replays(
    fast_retries: dict[str, str], procs: ProcessGroup, s3_client: Any, bucket: str
) -> None:
    missing = f"late-{uuid.uuid4().hex[:10]}"
    procs.start_worker(fast_retries)
    state = run_import(fast_retries, f"s3://{missing}/in/")
    assert state["status"] == "failed"
    assert any("NoSuchBucket" in e for e in state["errors"])
    entries = cli_json(fast_retries, "dlq", "list", "--kind", "task")["entries"]
    assert [e["source"] for e in entries] == [f"s3://{missing}/in/"]

    s3_client.create_bucket(Bucket=missing)
    s3_client.put_object(
        Bucket=missing, Key="in/clean.csv", Body=(FIXTURES / "entities" / "clean.csv").read_bytes()
    )
    assert cli(fast_retries, "dlq", "retry", "--all").returncode == 0
    done = cli(fast_retries, "imports", "show", state["importId"], "--json")
    from tests.support.services import wait_for

    def succeeded() -> bool:
        shown = json.loads(cli(fast_retries, "imports", "show", state["importId"], "--json").stdout)
        return bool(shown["status"] == "succeeded" and shown["rowsStored"] == 20)

    assert done.returncode == 0
    wait_for(succeeded, 60, 0.3, "the replayed import to succeed")


def test_a_full_dlq_keeps_the_range_retrying_and_the_import_still_ends(
    fast_retries: dict[str, str], procs: ProcessGroup, s3_client: Any, bucket: str
) -> None:
    import redis

    from ingest.dlq import DeadLetterQueue, row_entry

    # A short lease (so the sweeper looks every second) and stall bound.
    env = dict(
        fast_retries,
        INGEST_DLQ__MAX_ENTRIES="8",
        INGEST_S3CSV__LEASE_SECONDS="4",
        INGEST_S3CSV__STALL_TIMEOUT="6",
    )
    dlq = DeadLetterQueue(redis.Redis.from_url(env["INGEST_REDIS_URL"]), max_entries=8)
    dlq.add(
        row_entry(
            object_uri="s3://x/y.csv",
            etag="e",
            line=2,
            offset=9,
            raw=b"x",
            reason="placeholder",
            import_id="old",
            schema="entities",
            purpose="p",
        )
    )
    s3_client.put_object(
        Bucket=bucket,
        Key="bad/ragged_invalid.csv",
        Body=(FIXTURES / "entities" / "ragged_invalid.csv").read_bytes(),
    )
    procs.start_worker(env)
    from ingest.config import load_settings
    from ingest.runtime import Runtime
    from tasks.imports import submit_import
    from tests.support.services import wait_for

    rt = Runtime(load_settings(env))
    import_id = submit_import(
        rt.settings,
        rt.redis,
        rt.schemas,
        {"uri": f"s3://{bucket}/bad/", "schema": "entities", "purpose": "p"},
        "test",
    )
    from ingest.s3csv.imports import ImportStore

    store = ImportStore(rt.redis)
    wait_for(lambda: (store.get(import_id) or {}).get("status") == "running", 60, 0.2, "running")
    assert dlq.depth() == 1  # the 8 rows do not fit beside it: the range waits, not lost
    assert (store.get(import_id) or {})["rowsStored"] == 0
    # The stall bound still ends the import, saying why; the range keeps waiting for room.
    wait_for(lambda: (store.get(import_id) or {}).get("status") == "failed", 60, 0.2, "failed")
    errors = (store.get(import_id) or {})["errors"]
    assert any("room in the full DLQ" in e for e in errors), errors
    assert dlq.depth() == 2  # the placeholder, and the stall bound's entry for the range
    dlq.purge()
    wait_for(
        lambda: (store.get(import_id) or {}).get("status") == "succeeded",
        90,
        0.3,
        "the range to finish once the DLQ had room",
    )
    state = store.get(import_id) or {}
    assert state["rowsRejected"] == 8 and state["rowsStored"] == 2
