"""Watched prefixes end to end: moto's S3 notifies moto's SQS, real workers poll and import."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli.main import main as cli
from ingest.config import load_settings
from ingest.dlq import DeadLetterQueue
from ingest.sinks import FileSink
from tests.support.processes import ProcessGroup
from tests.support.services import wait_for
from tests.support.watch_support import WatchedPrefix
from webapp import create_app

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "entities"
AUTH = {"Authorization": "Bearer test-admin-token"}


def stored(sink_dir: Path) -> list[dict[str, Any]]:
    return [r.record for r in FileSink(f"file://{sink_dir}").iter_records()]


def test_an_upload_is_imported_once_and_a_reupload_stores_nothing_new(
    stack_env: dict[str, str],
    procs: ProcessGroup,
    s3_endpoint: str,
    s3_client: Any,
    bucket: str,
    sink_dir: Path,
) -> None:
    watched = WatchedPrefix(s3_endpoint, s3_client, bucket)
    env = watched.env(stack_env)
    # Two workers poll the same queue: each notification still starts one import.
    procs.start_worker(env, concurrency=1)
    procs.start_worker(env, concurrency=1)
    data = (FIXTURES / "clean.csv").read_bytes()
    s3_client.put_object(Bucket=bucket, Key="drop/day 1/clean.csv", Body=data)
    s3_client.put_object(Bucket=bucket, Key="elsewhere/clean.csv", Body=data)

    (state,) = watched.wait_settled(env["INGEST_REDIS_URL"], imports=1)
    assert state["status"] == "succeeded" and state["watch"] == watched.name
    assert state["rowsStored"] == len(data.splitlines()) - 1
    (obj,) = state["notification"]["objects"]
    assert obj["key"] == "drop/day 1/clean.csv" and obj["messageId"]
    records = stored(sink_dir)
    assert len(records) == state["rowsStored"]
    assert {r["provenance"]["ingestedBy"] for r in records} == {f"watch:{watched.name}"}

    s3_client.put_object(Bucket=bucket, Key="drop/day 1/clean.csv", Body=data)
    wait_for(
        lambda: watched.stats(env["INGEST_REDIS_URL"])["duplicates"] >= 1, 60, 0.2, "a duplicate"
    )
    assert len(watched.imports(env["INGEST_REDIS_URL"])) == 1
    assert len(stored(sink_dir)) == state["rowsStored"]

    client = create_app(load_settings(env)).test_client()
    (shown,) = client.get("/admin/watches", headers=AUTH).get_json()
    assert shown["name"] == watched.name and shown["queueUrl"] == watched.queue_url
    assert shown["importsStarted"] == 1 and shown["messagesRefused"] == 1
    assert shown["testEvents"] == 1 and shown["lastMessageAt"] and shown["lagSeconds"] is not None
    listed = client.get(f"/admin/imports?watch={watched.name}", headers=AUTH).get_json()
    assert [s["importId"] for s in listed] == [state["importId"]]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'ingest_watch_imports_started_total{{watch="{watched.name}"}} 1.0' in metrics
    assert f'ingest_watch_messages_refused_total{{watch="{watched.name}"}} 1.0' in metrics
    assert f'ingest_watch_last_message_timestamp_seconds{{watch="{watched.name}"}}' in metrics

    runner = CliRunner()
    shown_cli = runner.invoke(cli, ["watches", "--json"], env=env)
    assert shown_cli.exit_code == 0 and json.loads(shown_cli.output)[0]["importsStarted"] == 1
    listed_cli = runner.invoke(cli, ["imports", "list", "--watch", watched.name], env=env)
    assert listed_cli.exit_code == 0 and state["importId"] in listed_cli.output
    text = runner.invoke(cli, ["watches"], env=env).output
    assert f"{watched.name}: s3://{bucket}/drop/ <- {watched.queue_url}" in text
    assert "1 imports started, 1 messages refused" in text


def test_malformed_and_foreign_messages_never_block_the_queue(
    stack_env: dict[str, str],
    procs: ProcessGroup,
    s3_endpoint: str,
    s3_client: Any,
    bucket: str,
    sink_dir: Path,
) -> None:
    watched = WatchedPrefix(s3_endpoint, s3_client, bucket)
    env = watched.env(stack_env)
    foreign = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": "someone-elses-bucket"},
                    "object": {"key": "drop/x.csv", "size": 10, "eTag": "abc"},
                },
            }
        ]
    }
    watched.sqs.send_message(QueueUrl=watched.queue_url, MessageBody="this is not an event")
    watched.sqs.send_message(QueueUrl=watched.queue_url, MessageBody=json.dumps(foreign))
    procs.start_worker(env, concurrency=1)
    data = (FIXTURES / "clean.csv").read_bytes()
    s3_client.put_object(Bucket=bucket, Key="drop/clean.csv", Body=data)

    (state,) = watched.wait_settled(env["INGEST_REDIS_URL"], imports=1)
    assert state["status"] == "succeeded" and len(stored(sink_dir)) == state["rowsStored"]
    stats = watched.stats(env["INGEST_REDIS_URL"])
    assert stats["malformed"] == 1 and stats["messagesRefused"] == 1
    import redis

    dlq = DeadLetterQueue(redis.Redis.from_url(env["INGEST_REDIS_URL"]))
    (entry,) = [e for e in dlq.list(limit=10) if e.source == f"watch:{watched.name}"]
    assert entry.payload["args"][1] == "this is not an event" and "not JSON" in entry.reason

    # A retry reads the body again: still not an event, so the entry stays, one attempt more.
    from ingest.runtime import Runtime
    from tasks.dlq import retry_entries

    report = retry_entries(Runtime(load_settings(env)), ids=[entry.id], wait=True, timeout=60)
    assert report["failed"] == 1 and "still not an S3 event notification" in str(report)
    assert (dlq.get(entry.id) or entry).attempts == 2


def test_a_watch_that_cannot_be_polled_says_why(
    stack_env: dict[str, str], procs: ProcessGroup, s3_endpoint: str
) -> None:
    base = {"bucket": "lake", "purpose": "p", "prefix": ""}
    watches = [
        {
            **base,
            "name": "gone",
            "queueUrl": f"{s3_endpoint}/123456789012/no-such-queue",
            "schema": "entities",
        },
        {
            **base,
            "name": "typo",
            "queueUrl": f"{s3_endpoint}/123456789012/typo",
            "schema": "entitees",
        },
    ]
    env = dict(stack_env, INGEST_S3CSV__WATCHES=json.dumps(watches))
    procs.start_worker(env, concurrency=1)
    client = create_app(load_settings(env)).test_client()

    def errors() -> dict[str, str] | None:
        shown = client.get("/admin/watches", headers=AUTH).get_json()
        found = {w["name"]: w["lastError"] for w in shown}
        return found if all(found.values()) else None

    found = wait_for(errors, 60, 0.2, "both watches to report an error")
    assert "NonExistentQueue" in found["gone"] or "does not exist" in found["gone"]
    assert "unknown schema 'entitees'" in found["typo"]
