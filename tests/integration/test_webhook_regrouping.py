"""Webhook batches whose drain died between their dedup claims and their write are stored
when read back, however the re-read would have grouped their entries.

The claims of a batch are held in its batch id's name; a re-read that put its entries in a
batch of another id (with entries of another dead batch, or with new ones) found their events
claimed by somebody else and dropped them as duplicates. Each batch's entries are now recorded
before it is stored, and a re-read regroups them as they were.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from ingest.dedup import DedupIndex
from ingest.hashing import sha256_hex
from ingest.ratelimit import TokenBucket
from ingest.sinks import FileSink
from ingest.webhooks.drain import StreamDrainer, batches_key, batchof_key, lease_key
from ingest.webhooks.storage import store_event_batch
from ingest.webhooks.stream import GROUP, EventStreams, stream_key
from tests.support.services import wait_for

pytestmark = pytest.mark.integration

SOURCE = "acme"
SHARED = ["r", "1733480000.5", "u", "http://x/events", "p", "case-1"]


class Killed(BaseException):
    """The worker process dies: no ``except Exception`` clause after this point runs."""


class DyingSink(FileSink):
    def write_json_lines(self, name: str, lines: bytes, count: int) -> Any:
        raise Killed

    def write_records(self, name: str, records: Any) -> Any:
        raise Killed


def accept(streams: EventStreams, *names: str) -> None:
    for name in names:  # one entry each, as single-event requests make them
        items = [(name, sha256_hex(name.encode()), json.dumps({"n": name}), name, None)]
        streams.accept_batch(SOURCE, SHARED, items)


def no_dead_letters(payload: dict[str, Any], deliveries: int) -> None:
    raise AssertionError(f"dead-lettered after {deliveries} deliveries: {payload['streamIds']}")


def drain(
    client: redis.Redis, consumer: str, redeliver_after: float, store: Any, batch_size: int = 100
) -> Any:
    drainer = StreamDrainer(
        client, consumer, batch_size=batch_size, redeliver_after=redeliver_after, max_deliveries=5
    )
    client.delete(lease_key(SOURCE, 0))  # a dead drain's lease has expired
    token = drainer.acquire(SOURCE, 0)
    assert token is not None
    return drainer.drain(SOURCE, 0, token, store, no_dead_letters, max_seconds=0)


def stored_names(sink_dir: Path) -> list[str]:
    return sorted(
        json.loads(line)["data"]["n"]
        for path in sink_dir.rglob("*")
        if path.is_file()
        for line in path.read_text().splitlines()
    )


class Stores:
    """The real store of a drain, and one whose worker is killed after claiming."""

    def __init__(self, client: redis.Redis, sink_dir: Path) -> None:
        self.dedup = DedupIndex(client, ttl_seconds=3600, partitions=4)
        self.sink = FileSink(f"file://{sink_dir}")
        self.dying = DyingSink(f"file://{sink_dir}")

    def dies(self, payload: dict[str, Any]) -> None:
        store_event_batch(payload, self.dying, self.dedup, "webhook")  # claims, then the kill

    def stores(self, payload: dict[str, Any]) -> None:
        store_event_batch(payload, self.sink, self.dedup, "webhook")


def idle_pending(client: redis.Redis) -> int:
    return len(client.xpending_range(stream_key(SOURCE), GROUP, "-", "+", 100, idle=5))


def test_batches_killed_before_their_write_are_stored_when_read_back_together(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    streams = EventStreams(redis_client, TokenBucket(redis_client), None, high_water_mark=1000)
    store = Stores(redis_client, tmp_path)
    dies, stores = store.dies, store.stores

    accept(streams, "a", "b")
    with pytest.raises(Killed):
        drain(redis_client, "dead-1", 60, dies)  # batch [a, b]: claimed, never written
    accept(streams, "c")
    with pytest.raises(Killed):
        drain(redis_client, "dead-2", 60, dies)  # batch [c]: the same
    accept(streams, "d")

    # A later drain finds a, b and c pending (one read would group all three) and d new.
    wait_for(lambda: idle_pending(redis_client) == 3, 10, 0.01, "the dead entries to be idle")
    report = drain(redis_client, "alive", 0.005, stores)

    assert stored_names(tmp_path) == ["a", "b", "c", "d"]
    assert (report.reclaimed, report.events, report.failed) == (3, 4, 0)
    assert redis_client.xlen(stream_key(SOURCE)) == 0
    # The records of the batches went with their acknowledgement.
    assert redis_client.hlen(batchof_key(SOURCE)) == redis_client.hlen(batches_key(SOURCE)) == 0


def test_a_batch_read_back_in_part_is_completed_before_it_is_stored(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    streams = EventStreams(redis_client, TokenBucket(redis_client), None, high_water_mark=1000)
    store = Stores(redis_client, tmp_path)
    accept(streams, "a", "b", "c")
    with pytest.raises(Killed):
        drain(redis_client, "dead", 60, store.dies)  # batch [a, b, c]
    wait_for(lambda: idle_pending(redis_client) == 3, 10, 0.01, "the dead entries to be idle")

    # Batches of 2 now: the re-read asks for 2 pending entries and finds a and b of [a, b, c].
    report = drain(redis_client, "alive", 0.005, store.stores, batch_size=2)

    assert stored_names(tmp_path) == ["a", "b", "c"]
    assert (report.reclaimed, report.batches) == (3, 1)
    assert redis_client.xlen(stream_key(SOURCE)) == 0
