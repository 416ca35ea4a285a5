"""The import ledger and its sweeper against a real Redis, with dispatching recorded.

Time is a settable clock: leases and the stall bound are about deadlines, not sleeps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from ingest.dlq import DeadLetterQueue
from ingest.s3csv.imports import ImportRequest, ImportStore, RangeSummary
from ingest.s3csv.ledger import SCAN, ImportLedger
from ingest.s3csv.sweeper import LedgerSweeper, stall_entry_id

pytestmark = pytest.mark.integration
LEASE, STALL, CHUNK = 10.0, 100.0, 2


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Dispatched:
    ranges: list[str] = field(default_factory=list)
    scans: list[str] = field(default_factory=list)
    chunks: list[tuple[str, int]] = field(default_factory=list)


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def ledger(redis_client: redis.Redis, clock: Clock) -> ImportLedger:
    return ImportLedger(redis_client, LEASE, clock=clock)


@pytest.fixture()
def store(redis_client: redis.Redis) -> ImportStore:
    return ImportStore(redis_client)


def sweeper(ledger: ImportLedger, store: ImportStore, seen: Dispatched) -> LedgerSweeper:
    def chunk(import_id: str, index: int) -> bool:
        seen.chunks.append((import_id, index))
        return True

    return LedgerSweeper(
        ledger=ledger,
        store=store,
        dlq=DeadLetterQueue(store.client),
        dispatch_range=lambda spec: seen.ranges.append(spec["rangeId"]),
        dispatch_scan=seen.scans.append,
        dispatch_chunk=chunk,
        chunk_size=CHUNK,
        stall_timeout=STALL,
    )


def spec(import_id: str, n: int) -> dict[str, Any]:
    return {"importId": import_id, "rangeId": f"r{n}", "bucket": "b", "key": "k.csv",
            "start": n * 10, "end": n * 10 + 10}  # fmt: skip


def running_import(store: ImportStore, ledger: ImportLedger, ranges: int) -> str:
    """An import planned with ``ranges`` ranges; its first chunk registered and marked sent."""
    request = ImportRequest(uri="s3://b/k.csv", schema="entities", purpose="p")
    import_id = store.create(request, "test")
    ledger.track(import_id)
    specs = [json.dumps(spec(import_id, n)) for n in range(ranges)]
    store.client.rpush(ledger.plan_key(import_id), *specs)
    store.mark_running(import_id, 1, ranges * 10, ranges)
    ledger.scan_done(import_id)
    register_chunk(store, ledger, import_id, 0)
    return import_id


def register_chunk(store: ImportStore, ledger: ImportLedger, import_id: str, chunk: int) -> None:
    raw = store.client.lrange(ledger.plan_key(import_id), chunk * CHUNK, (chunk + 1) * CHUNK - 1)
    ledger.register(import_id, [(json.loads(s)["rangeId"], s.decode()) for s in raw])
    store.client.set(f"{ledger.plan_key(import_id)}:dispatched:{chunk}", 1)


def finish(store: ImportStore, ledger: ImportLedger, import_id: str, n: int) -> None:
    store.credit_range(import_id, RangeSummary(rangeId=f"r{n}", bytes=10, rowsStored=1))
    ledger.settle(import_id, f"r{n}", failed=False)


class TestLeases:
    def test_a_range_with_its_result_cannot_be_leased_again(
        self, store: ImportStore, ledger: ImportLedger
    ) -> None:
        import_id = running_import(store, ledger, 2)
        assert ledger.lease(import_id, "r0")
        finish(store, ledger, import_id, 0)
        assert not ledger.lease(import_id, "r0")
        assert ledger.state(import_id, "r0") == "done"

    def test_registering_again_keeps_finished_ranges(
        self, store: ImportStore, ledger: ImportLedger
    ) -> None:
        import_id = running_import(store, ledger, 2)
        finish(store, ledger, import_id, 0)
        register_chunk(store, ledger, import_id, 0)
        assert ledger.states(import_id) == {"r0": "done", "r1": "planned"}
        assert ledger.outstanding(import_id) == 1

    def test_of_many_claimants_of_an_expired_lease_exactly_one_wins(
        self, store: ImportStore, ledger: ImportLedger, clock: Clock
    ) -> None:
        import_id = running_import(store, ledger, 1)
        ledger.lease(import_id, "r0")
        clock.now += LEASE + 1
        assert [ledger.claim(import_id, "r0") for _ in range(5)] == [True] + [False] * 4


class TestSweeper:
    def test_a_killed_range_is_sent_again_once_by_concurrent_sweepers(
        self, store: ImportStore, ledger: ImportLedger, clock: Clock
    ) -> None:
        import_id = running_import(store, ledger, 2)
        ledger.lease(import_id, "r0")
        ledger.lease(import_id, "r1")
        finish(store, ledger, import_id, 1)
        seen = Dispatched()
        sweepers = [sweeper(ledger, store, seen) for _ in range(3)]
        clock.now += LEASE - 1
        for s in sweepers:
            s.sweep()
        assert seen.ranges == []  # the lease still runs
        clock.now += 2
        for s in sweepers:
            s.sweep()
        assert seen.ranges == ["r0"]

    def test_a_planned_range_waits_while_the_import_moves(
        self, store: ImportStore, ledger: ImportLedger, clock: Clock
    ) -> None:
        import_id = running_import(store, ledger, 2)
        seen = Dispatched()
        clock.now += LEASE + 1
        ledger.lease(import_id, "r0")  # another range started: r1's message is just queued
        sweeper(ledger, store, seen).sweep()
        assert seen.ranges == []
        clock.now += LEASE + 1  # nothing moved for a lease: r1's message is lost
        sweeper(ledger, store, seen).sweep()
        assert sorted(seen.ranges) == ["r0", "r1"]

    def test_a_lost_scan_message_is_sent_again(
        self, store: ImportStore, ledger: ImportLedger, clock: Clock
    ) -> None:
        request = ImportRequest(uri="s3://b/k.csv", schema="entities", purpose="p")
        import_id = store.create(request, "test")
        ledger.track(import_id)
        seen = Dispatched()
        sweeper(ledger, store, seen).sweep()
        assert seen.scans == []
        clock.now += LEASE + 1
        sweeper(ledger, store, seen).sweep()
        sweeper(ledger, store, seen).sweep()
        assert seen.scans == [import_id]
        assert ledger.outstanding(import_id) == 1 and SCAN in ledger.due(
            import_id, clock.now + LEASE + 1
        )

    def test_the_next_chunk_starts_when_its_callback_never_ran(
        self, store: ImportStore, ledger: ImportLedger
    ) -> None:
        import_id = running_import(store, ledger, 3)
        finish(store, ledger, import_id, 0)
        finish(store, ledger, import_id, 1)
        seen = Dispatched()
        sweeper(ledger, store, seen).sweep()
        assert seen.chunks == [(import_id, 1)]
        assert (store.get(import_id) or {})["status"] == "running"

    def test_an_import_whose_ranges_all_have_results_is_closed(
        self, store: ImportStore, ledger: ImportLedger
    ) -> None:
        import_id = running_import(store, ledger, 2)
        finish(store, ledger, import_id, 0)
        finish(store, ledger, import_id, 1)
        sweeper(ledger, store, Dispatched()).sweep()
        state = store.get(import_id) or {}
        assert state["status"] == "succeeded" and state["finishedAt"]
        assert import_id not in ledger.active()

    def test_a_failed_range_closes_the_import_failed(
        self, store: ImportStore, ledger: ImportLedger
    ) -> None:
        import_id = running_import(store, ledger, 1)
        store.credit_range(import_id, RangeSummary(rangeId="r0", failed=True, error="bad"))
        ledger.settle(import_id, "r0", failed=True)
        sweeper(ledger, store, Dispatched()).sweep()
        assert (store.get(import_id) or {})["status"] == "failed"

    def test_the_chord_callback_and_the_sweeper_close_an_import_once(
        self, store: ImportStore, ledger: ImportLedger
    ) -> None:
        import_id = running_import(store, ledger, 1)
        finish(store, ledger, import_id, 0)
        assert store.finish_if_running(import_id, "succeeded")
        finished_at = (store.get(import_id) or {})["finishedAt"]
        sweeper(ledger, store, Dispatched()).sweep()
        assert not store.finish_if_running(import_id, "failed")
        state = store.get(import_id) or {}
        assert state["status"] == "succeeded" and state["finishedAt"] == finished_at


class TestStallBound:
    def test_an_import_without_progress_ends_failed_with_its_ranges_in_the_dlq(
        self, store: ImportStore, ledger: ImportLedger, clock: Clock
    ) -> None:
        import_id = running_import(store, ledger, 3)
        finish(store, ledger, import_id, 0)
        clock.now += STALL + 1
        for _ in range(2):
            sweeper(ledger, store, Dispatched()).sweep()
        state = store.get(import_id) or {}
        assert state["status"] == "failed"
        assert state["ranges"] == {"total": 3, "done": 1, "failed": 2, "resumed": 0}
        assert any("stallTimeout" in e for e in state["errors"])
        dlq = DeadLetterQueue(store.client)
        assert dlq.depth() == 2  # r1 (dispatched, lost) and r2 (never dispatched)
        assert dlq.get(stall_entry_id(import_id, "r2")) is not None

    def test_a_stalled_range_that_completes_later_turns_the_import_succeeded(
        self, store: ImportStore, ledger: ImportLedger, clock: Clock
    ) -> None:
        import_id = running_import(store, ledger, 1)
        clock.now += STALL + 1
        sweeper(ledger, store, Dispatched()).sweep()
        assert (store.get(import_id) or {})["status"] == "failed"
        summary = RangeSummary(rangeId="r0", bytes=10, rowsStored=1)
        assert not store.credit_range(import_id, summary)
        assert store.recover_range(import_id, summary)
        assert (store.get(import_id) or {})["status"] == "succeeded"

    def test_a_scan_that_never_ran_fails_the_import(
        self, store: ImportStore, ledger: ImportLedger, clock: Clock
    ) -> None:
        request = ImportRequest(uri="s3://b/k.csv", schema="entities", purpose="p")
        import_id = store.create(request, "test")
        ledger.track(import_id)
        clock.now += STALL + 1
        sweeper(ledger, store, Dispatched()).sweep()
        state = store.get(import_id) or {}
        assert state["status"] == "failed" and "did not finish" in state["errors"][0]
        assert DeadLetterQueue(store.client).depth() == 1
