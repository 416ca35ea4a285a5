"""The once-per-object-version claims of a watch, against a real Redis (no SQS needed)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from ingest.config import WatchConfig
from ingest.dlq import DeadLetterQueue
from ingest.s3csv.imports import ImportStore
from ingest.s3csv.watches import QueueMessage, WatchIntake, WatchStats

pytestmark = pytest.mark.integration

WATCH = WatchConfig.model_validate(
    {
        "name": "drops",
        "queueUrl": "http://127.0.0.1:1/123456789012/drops",
        "bucket": "lake",
        "prefix": "drop/",
        "schema": "entities",
        "purpose": "case-4711",
    }
)


def message(message_id: str, *keys: str, etag: str = "e1", version: str = "") -> QueueMessage:
    obj = {"size": 10, "eTag": etag, **({"versionId": version} if version else {})}
    records = [
        {
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "lake"}, "object": {"key": k, **obj}},
        }
        for k in keys
    ]
    return QueueMessage(message_id, f"r-{message_id}", json.dumps({"Records": records}))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def intake(client: Any, dispatched: list[str], clock: Clock | None = None) -> WatchIntake:
    return WatchIntake(
        WATCH,
        ImportStore(client),
        DeadLetterQueue(client),
        dispatched.append,
        clock=clock or Clock(),
    )


def test_one_receive_is_one_import_of_its_new_objects(redis_client: Any) -> None:
    dispatched: list[str] = []
    outcome = intake(redis_client, dispatched).handle(
        [message("m1", "drop%2Fa.csv"), message("m2", "drop%2Fb+c.csv", "drop%2Fnotes.json")]
    )
    assert dispatched == [outcome.import_id] and len(outcome.delete) == 2
    state = ImportStore(redis_client).get(dispatched[0]) or {}
    assert state["watch"] == "drops" and state["status"] == "queued"
    assert [o["key"] for o in state["notification"]["objects"]] == ["drop/a.csv", "drop/b c.csv"]
    assert state["notification"]["messageIds"] == ["m1", "m2"]


def test_a_notification_delivered_twice_starts_nothing_new(redis_client: Any) -> None:
    dispatched: list[str] = []
    first = intake(redis_client, dispatched).handle([message("m1", "drop%2Fa.csv")])
    again = intake(redis_client, dispatched).handle([message("m1", "drop%2Fa.csv")])
    same_etag = intake(redis_client, dispatched).handle([message("m9", "drop%2Fa.csv")])
    assert dispatched == [first.import_id]
    assert again.import_id is None and len(again.delete) == 1
    assert same_etag.import_id is None and len(same_etag.delete) == 1
    assert WatchStats(redis_client, "drops").read()["duplicates"] == 2


def test_a_new_version_of_the_same_key_is_imported(redis_client: Any) -> None:
    dispatched: list[str] = []
    intake(redis_client, dispatched).handle([message("m1", "drop%2Fa.csv", etag="e1")])
    intake(redis_client, dispatched).handle([message("m2", "drop%2Fa.csv", etag="e2")])
    assert len(dispatched) == 2


def test_the_same_bytes_as_a_new_version_start_nothing(redis_client: Any) -> None:
    dispatched: list[str] = []
    intake(redis_client, dispatched).handle([message("m1", "drop%2Fa.csv", version="v1")])
    again = intake(redis_client, dispatched).handle([message("m2", "drop%2Fa.csv", version="v2")])
    assert len(dispatched) == 1 and again.import_id is None
    state = ImportStore(redis_client).get(dispatched[0]) or {}
    assert state["notification"]["objects"][0]["versionId"] == "v1"


def test_a_poller_killed_between_claim_and_queue_leaves_an_import_that_is_queued_later(
    redis_client: Any,
) -> None:
    def dies(import_id: str) -> None:
        raise ConnectionError("the broker went away, or the process was killed")

    clock = Clock()
    first = WatchIntake(
        WATCH, ImportStore(redis_client), DeadLetterQueue(redis_client), dies, clock=clock
    )
    with pytest.raises(ConnectionError):
        first.handle([message("m1", "drop%2Fa.csv")])
    dispatched: list[str] = []
    # Redelivered at once: the claim may still be in the middle of its dispatch, so wait.
    early = intake(redis_client, dispatched, clock).handle([message("m1", "drop%2Fa.csv")])
    assert dispatched == [] and early.delete == [] and len(early.retry_later) == 1
    clock.now += 120
    late = intake(redis_client, dispatched, clock).handle([message("m1", "drop%2Fa.csv")])
    assert len(dispatched) == 1 and len(late.delete) == 1 and late.import_id is None
    state = ImportStore(redis_client).get(dispatched[0]) or {}
    assert [o["key"] for o in state["notification"]["objects"]] == ["drop/a.csv"]
    final = intake(redis_client, dispatched, clock).handle([message("m1", "drop%2Fa.csv")])
    assert len(dispatched) == 1 and len(final.delete) == 1


def test_pollers_racing_for_one_message_start_one_import(redis_client: Any) -> None:
    dispatched: list[str] = []
    start = threading.Barrier(8)

    def poll() -> None:
        start.wait()
        intake(redis_client, dispatched).handle([message("m1", "drop%2Fa.csv", "drop%2Fb.csv")])

    threads = [threading.Thread(target=poll) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(dispatched) == 1
    stats = WatchStats(redis_client, "drops").read()
    assert stats["importsStarted"] == 1 and stats["objectsClaimed"] == 2


def test_malformed_and_foreign_messages_are_settled_not_kept(redis_client: Any) -> None:
    dispatched: list[str] = []
    foreign = message("m2", "drop%2Fa.csv")
    foreign = QueueMessage("m2", "r", foreign.body.replace('"lake"', '"elsewhere"'))
    outcome = intake(redis_client, dispatched).handle(
        [QueueMessage("m1", "r", "{not json"), foreign]
    )
    assert dispatched == [] and len(outcome.delete) == 2
    entries = DeadLetterQueue(redis_client).list(limit=10)
    assert len(entries) == 1 and entries[0].payload["args"] == ["drops", "{not json"]
    stats = WatchStats(redis_client, "drops").read()
    assert stats["malformed"] == 1 and stats["messagesRefused"] == 1
    assert ImportStore(redis_client).list_recent() == []


def test_the_planned_size_is_read_from_s3_not_from_the_message(
    redis_client: Any, s3_client: Any, bucket: str
) -> None:
    from ingest.s3csv.watches import watched_objects

    put = s3_client.put_object(Bucket=bucket, Key="drop/a.csv", Body=b"id\n1\n2\n")
    etag = put["ETag"].strip('"')
    watch = WATCH.model_copy(update={"bucket": bucket})
    forged = json.dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "bucket": {"name": bucket},
                        "object": {"key": "drop/a.csv", "size": 3, "eTag": etag},
                    },
                }
            ]
        }
    )
    store = ImportStore(redis_client)
    dispatched: list[str] = []
    WatchIntake(watch, store, DeadLetterQueue(redis_client), dispatched.append).handle(
        [QueueMessage("m1", "r", forged)]
    )
    (planned,) = watched_objects(store, dispatched[0], s3_client) or []
    assert (planned.key, planned.size, planned.etag) == ("drop/a.csv", 7, etag)
    s3_client.put_object(Bucket=bucket, Key="drop/a.csv", Body=b"id\n3\n")
    (replaced,) = watched_objects(store, dispatched[0], s3_client) or []
    assert replaced.etag == etag  # pinned: its ranges fail loudly instead of reading new bytes
