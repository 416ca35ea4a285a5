"""The dead-letter queue on a real Redis: order, filters, bounds, leases, backup, restart."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import redis

from ingest.dlq import AddResult, DeadLetterEntry, DeadLetterQueue, DeadLetterQueueFull
from tests.support.services import RedisServer, wait_for

pytestmark = pytest.mark.integration


def entry(
    n: int = 0,
    kind: str = "row",
    source: str = "s3://bucket/a.csv",
    import_id: str | None = "imp-1",
    entry_id: str | None = None,
) -> DeadLetterEntry:
    return DeadLetterEntry(
        id=entry_id or f"{kind}:{n:04d}",
        kind=kind,  # type: ignore[arg-type]
        source=source,
        reason=f"failure {n}",
        payload={"n": n},
        import_id=import_id,
    )


@pytest.fixture()
def dlq(redis_client: redis.Redis) -> DeadLetterQueue:
    return DeadLetterQueue(redis_client, max_entries=10_000, warn_threshold=100)


def ids(entries: list[DeadLetterEntry]) -> list[str]:
    return [e.id for e in entries]


class TestAddAndGet:
    def test_added_entry_comes_back_whole(self, dlq: DeadLetterQueue) -> None:
        added = entry(1)
        assert dlq.add(added) == added.id
        assert dlq.get(added.id) == added

    def test_unknown_id_is_none(self, dlq: DeadLetterQueue) -> None:
        assert dlq.get("row:nope") is None

    def test_add_many_returns_ids_in_order(self, dlq: DeadLetterQueue) -> None:
        batch = [entry(n) for n in range(3)]
        assert dlq.add_many(batch) == ids(batch)
        assert dlq.depth() == 3

    def test_re_adding_an_id_does_not_duplicate_or_reset_it(self, dlq: DeadLetterQueue) -> None:
        dlq.add(entry(1))
        dlq.record_failure("row:0001", {"type": "E", "message": "again"})
        result = dlq.add_detailed([entry(1), entry(2)])
        assert (result.added, result.depth) == (1, 2)
        stored = dlq.get("row:0001")
        assert stored is not None and stored.attempts == 2
        assert ids(dlq.list()) == ["row:0001", "row:0002"]

    def test_duplicate_ids_in_one_batch_count_once(self, dlq: DeadLetterQueue) -> None:
        assert dlq.add_detailed([entry(1), entry(1)]).added == 1
        assert dlq.depth() == 1

    def test_works_with_a_decoding_client(self, redis_url: str, redis_client: redis.Redis) -> None:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        text_dlq = DeadLetterQueue(client)
        text_dlq.add_many([entry(1), entry(2, kind="task")])
        assert ids(text_dlq.list(kind="task")) == ["task:0002"]
        assert text_dlq.remove("row:0001")
        client.close()


class TestBounds:
    def test_full_queue_refuses_the_whole_batch(self, redis_client: redis.Redis) -> None:
        small = DeadLetterQueue(redis_client, max_entries=5, warn_threshold=5)
        small.add_many([entry(n) for n in range(3)])
        with pytest.raises(DeadLetterQueueFull) as caught:
            small.add_many([entry(n) for n in range(3, 6)])
        assert (caught.value.depth, caught.value.requested) == (3, 3)
        assert small.depth() == 3
        assert small.get("row:0003") is None
        assert small.count(source="s3://bucket/a.csv") == 3

    def test_re_adding_existing_entries_to_a_full_queue_is_fine(
        self, redis_client: redis.Redis
    ) -> None:
        small = DeadLetterQueue(redis_client, max_entries=2)
        small.add_many([entry(1), entry(2)])
        assert small.add(entry(1)) == "row:0001"

    def test_concurrent_batches_never_exceed_the_bound(
        self, redis_url: str, redis_client: redis.Redis
    ) -> None:
        outcomes: list[str] = []
        barrier = threading.Barrier(8)

        def add_batch(worker: int) -> None:
            queue = DeadLetterQueue(redis.Redis.from_url(redis_url), max_entries=120)
            barrier.wait()
            try:
                queue.add_many([entry(worker * 100 + n) for n in range(50)])
                outcomes.append("added")
            except DeadLetterQueueFull:
                outcomes.append("full")

        threads = [threading.Thread(target=add_batch, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["added"] * 2 + ["full"] * 6
        assert DeadLetterQueue(redis_client).depth() == 100

    def test_threshold_callback_gets_the_depth(self, redis_client: redis.Redis) -> None:
        seen: list[int] = []
        queue = DeadLetterQueue(redis_client, warn_threshold=3, on_threshold=seen.append)
        results = [queue.add_detailed([entry(n)]) for n in range(4)]
        assert seen == [3, 4]
        assert [r.over_threshold for r in results] == [False, False, True, True]

    def test_threshold_callback_not_called_for_a_no_op(self, redis_client: redis.Redis) -> None:
        seen: list[int] = []
        queue = DeadLetterQueue(redis_client, warn_threshold=1, on_threshold=seen.append)
        queue.add(entry(1))
        queue.add(entry(1))
        assert seen == [1]

    def test_a_failing_callback_does_not_lose_the_entry(self, redis_client: redis.Redis) -> None:
        def broken(depth: int) -> None:
            raise RuntimeError("metrics down")

        queue = DeadLetterQueue(redis_client, warn_threshold=1, on_threshold=broken)
        assert queue.add_detailed([entry(1)]) == AddResult(["row:0001"], 1, 1, True)
        assert queue.get("row:0001") is not None


class TestListAndCount:
    @pytest.fixture()
    def mixed(self, dlq: DeadLetterQueue) -> DeadLetterQueue:
        dlq.add(entry(0, entry_id="row:zzz"))  # ids do not sort by time: order is by arrival
        dlq.add(entry(1, kind="task", source="s3://bucket/b.csv"))
        dlq.add_many(
            [
                entry(2, source="s3://bucket/b.csv", import_id="imp-2"),
                entry(3, kind="event", source="webhook:acme", import_id=None),
                entry(4, entry_id="row:aaa"),
            ]
        )
        return dlq

    def test_oldest_first(self, mixed: DeadLetterQueue) -> None:
        assert ids(mixed.list()) == ["row:zzz", "task:0001", "row:0002", "event:0003", "row:aaa"]

    def test_limit_and_after_page_through(self, mixed: DeadLetterQueue) -> None:
        first = mixed.list(limit=2)
        second = mixed.list(limit=2, after=first[-1].id)
        third = mixed.list(limit=2, after=second[-1].id)
        assert ids(first + second + third) == ids(mixed.list())
        assert mixed.list(after=third[-1].id) == []

    def test_after_an_entry_that_left_is_an_error(self, mixed: DeadLetterQueue) -> None:
        mixed.remove("task:0001")
        with pytest.raises(KeyError):
            mixed.list(after="task:0001")

    def test_filter_by_kind(self, mixed: DeadLetterQueue) -> None:
        assert ids(mixed.list(kind="row")) == ["row:zzz", "row:0002", "row:aaa"]

    def test_filter_by_source(self, mixed: DeadLetterQueue) -> None:
        assert ids(mixed.list(source="s3://bucket/b.csv")) == ["task:0001", "row:0002"]

    def test_filter_by_import_id(self, mixed: DeadLetterQueue) -> None:
        assert ids(mixed.list(import_id="imp-2")) == ["row:0002"]

    def test_filters_combine(self, mixed: DeadLetterQueue) -> None:
        assert ids(mixed.list(kind="row", source="s3://bucket/b.csv")) == ["row:0002"]
        assert ids(mixed.list(kind="task", import_id="imp-1", limit=1)) == ["task:0001"]

    def test_filtered_paging_over_many_entries(self, dlq: DeadLetterQueue) -> None:
        dlq.add_many([entry(n, kind="task" if n % 7 else "row") for n in range(900)])
        walked: list[DeadLetterEntry] = []
        while page := dlq.list(limit=40, kind="row", after=walked[-1].id if walked else None):
            walked += page
        assert ids(walked) == [f"row:{n:04d}" for n in range(0, 900, 7)]

    def test_counts(self, mixed: DeadLetterQueue) -> None:
        assert mixed.count() == mixed.depth() == 5
        assert mixed.count(kind="row") == 3
        assert mixed.count(source="s3://bucket/b.csv") == 2
        assert mixed.count(kind="row", source="s3://bucket/b.csv") == 1
        assert mixed.count(import_id="imp-1") == 3
        assert mixed.count(kind="event", source="s3://bucket/a.csv") == 0

    def test_iteration_survives_removal(self, dlq: DeadLetterQueue) -> None:
        dlq.add_many([entry(n) for n in range(1200)])
        seen = [e.id for e in dlq.iter_entries() if dlq.remove(e.id)]
        assert len(seen) == 1200 and dlq.depth() == 0


class TestRetryBookkeeping:
    def test_record_failure_counts_and_keeps_history(self, dlq: DeadLetterQueue) -> None:
        first = entry(1)
        dlq.add(first)
        assert dlq.record_failure(
            first.id, {"type": "IOError", "message": "sink down"}, reason="retry failed: sink down"
        )
        stored = dlq.get(first.id)
        assert stored is not None
        assert (stored.attempts, stored.reason) == (2, "retry failed: sink down")
        assert stored.last_failed_at >= stored.first_failed_at == first.first_failed_at
        assert stored.error is not None and stored.error.message == "sink down"
        assert [(r.attempt, r.failed_at) for r in stored.retry_history] == [
            (2, stored.last_failed_at)
        ]

    def test_history_keeps_the_last_ten(self, dlq: DeadLetterQueue) -> None:
        dlq.add(entry(1))
        for n in range(15):
            dlq.record_failure("row:0001", {"type": "E", "message": f"try {n}"})
        stored = dlq.get("row:0001")
        assert stored is not None and stored.attempts == 16
        assert [r.attempt for r in stored.retry_history] == list(range(7, 17))

    def test_record_failure_of_a_gone_entry(self, dlq: DeadLetterQueue) -> None:
        assert dlq.record_failure("row:gone", {"type": "E", "message": "m"}) is False

    def test_remove_clears_every_index(
        self, dlq: DeadLetterQueue, redis_client: redis.Redis
    ) -> None:
        dlq.add_many([entry(1), entry(2, kind="task")])
        dlq.claim_for_retry("row:0001")
        assert dlq.remove("row:0001") is True
        assert dlq.remove("row:0001") is False
        assert (dlq.count(kind="row"), dlq.count(source="s3://bucket/a.csv")) == (0, 1)
        assert dlq.count(import_id="imp-1") == 1
        assert dlq.remove_many(["task:0002", "task:nope"]) == 1
        assert sorted(redis_client.keys("*")) == [b"ingest:dlq:seq"]


class TestPurge:
    @pytest.fixture()
    def filled(self, dlq: DeadLetterQueue) -> DeadLetterQueue:
        dlq.add_many(
            [
                entry(n, kind="row" if n % 2 else "task", source=f"s3://bucket/{n % 3}.csv")
                for n in range(1, 1101)
            ]
        )
        return dlq

    def test_everything(self, filled: DeadLetterQueue) -> None:
        assert filled.purge() == 1100
        assert filled.depth() == 0 and filled.list() == []

    def test_by_kind(self, filled: DeadLetterQueue) -> None:
        assert filled.purge(kind="task") == 550
        assert filled.count() == filled.count(kind="row") == 550

    def test_by_source(self, filled: DeadLetterQueue) -> None:
        assert filled.purge(source="s3://bucket/0.csv") == 366
        assert filled.count(source="s3://bucket/0.csv") == 0
        assert filled.depth() == 1100 - 366

    def test_ids_restricted_by_filters(self, filled: DeadLetterQueue) -> None:
        assert filled.purge(ids=["row:0001", "task:0002", "row:9999"], kind="row") == 1
        assert filled.get("task:0002") is not None
        assert filled.purge(ids=["task:0002"]) == 1


class TestClaims:
    def test_exactly_one_concurrent_claim_wins(self, dlq: DeadLetterQueue, redis_url: str) -> None:
        dlq.add(entry(1))
        wins: list[bool] = []
        barrier = threading.Barrier(10)

        def claim() -> None:
            operator = DeadLetterQueue(redis.Redis.from_url(redis_url))
            barrier.wait()
            wins.append(operator.claim_for_retry("row:0001"))

        threads = [threading.Thread(target=claim) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(wins) == [False] * 9 + [True]

    def test_lease_expires(self, dlq: DeadLetterQueue, redis_client: redis.Redis) -> None:
        dlq.add(entry(1))
        assert dlq.claim_for_retry("row:0001", lease_seconds=30)
        assert 0 < redis_client.ttl("ingest:dlq:claim:row:0001") <= 30

    def test_only_the_holder_releases(
        self, dlq: DeadLetterQueue, redis_client: redis.Redis
    ) -> None:
        other = DeadLetterQueue(redis_client)
        dlq.add(entry(1))
        assert dlq.claim_for_retry("row:0001")
        assert other.release_claim("row:0001") is False
        assert other.claim_for_retry("row:0001") is False
        assert dlq.release_claim("row:0001") is True
        assert other.claim_for_retry("row:0001") is True

    def test_failed_retry_frees_the_lease(self, dlq: DeadLetterQueue) -> None:
        dlq.add(entry(1))
        dlq.claim_for_retry("row:0001")
        dlq.record_failure("row:0001", {"type": "E", "message": "m"})
        assert DeadLetterQueue(dlq.redis).claim_for_retry("row:0001")

    def test_no_lease_on_a_missing_entry(self, dlq: DeadLetterQueue) -> None:
        assert dlq.claim_for_retry("row:nope") is False


class TestBackup:
    def test_export_import_round_trip(
        self, dlq: DeadLetterQueue, redis_client: redis.Redis
    ) -> None:
        dlq.add_many([entry(n, kind="task" if n % 2 else "row") for n in range(1, 1201)])
        dlq.record_failure("row:0002", {"type": "E", "message": "m"})
        before = list(dlq.iter_entries())
        backup = io.StringIO()
        assert dlq.export(backup) == 1200
        lines = backup.getvalue().splitlines()
        assert json.loads(lines[0])["firstFailedAt"] == before[0].first_failed_at
        redis_client.flushdb()
        assert dlq.import_(io.StringIO(backup.getvalue() + "\n")) == 1200
        assert list(dlq.iter_entries()) == before
        assert dlq.count(kind="task") == 600
        assert dlq.import_(io.StringIO(backup.getvalue())) == 0


def test_entries_survive_a_redis_restart(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        client: Any = redis.Redis.from_url(server.url)
        DeadLetterQueue(client).add_many([entry(n) for n in range(20)])
        client.close()
        server.stop()  # SIGTERM: Redis writes out the AOF before exiting
        server = RedisServer(tmp_path / "redis", port=server.port)
        server.start()
        client = redis.Redis.from_url(server.url)
        wait_for(lambda: client.info("persistence")["loading"] == 0, 20, message="AOF loaded")
        restored = DeadLetterQueue(client)
        assert restored.depth() == 20
        assert ids(restored.list(limit=3, kind="row")) == ["row:0000", "row:0001", "row:0002"]
        assert restored.add(entry(20)) and restored.depth() == 21  # sequence carried on
        assert ids(restored.list(after="row:0019")) == ["row:0020"]
        client.close()
    finally:
        server.stop()
