"""Idempotency claims against a real Redis: outcomes, expiry, races and batches."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from ingest.webhooks.idempotency import (
    Claim,
    ClaimOutcome,
    IdempotencyStore,
    idempotency_key,
)
from tests.support.services import wait_for

pytestmark = pytest.mark.integration

HASH_A = "a" * 64
HASH_B = "b" * 64


@pytest.fixture()
def store(redis_client: redis.Redis) -> IdempotencyStore:
    return IdempotencyStore(redis_client, ttl_seconds=3600, inflight_ttl_seconds=60)


class TestBegin:
    def test_first_claim_is_new(self, store: IdempotencyStore) -> None:
        assert store.begin("acme", "k1", HASH_A) == Claim(ClaimOutcome.NEW, "k1")

    def test_same_key_same_body_before_completion_is_in_flight(
        self, store: IdempotencyStore
    ) -> None:
        store.begin("acme", "k1", HASH_A)
        assert store.begin("acme", "k1", HASH_A).outcome is ClaimOutcome.IN_FLIGHT

    def test_completed_key_is_duplicate_with_stored_result(self, store: IdempotencyStore) -> None:
        store.begin("acme", "k1", HASH_A)
        store.complete("acme", "k1", HASH_A, {"eventId": "evt-1", "contentHash": HASH_A})
        claim = store.begin("acme", "k1", HASH_A)
        assert claim.outcome is ClaimOutcome.DUPLICATE
        assert claim.result == {"eventId": "evt-1", "contentHash": HASH_A}

    @pytest.mark.parametrize("completed", [False, True])
    def test_same_key_other_body_is_conflict(
        self, store: IdempotencyStore, completed: bool
    ) -> None:
        store.begin("acme", "k1", HASH_A)
        if completed:
            store.complete("acme", "k1", HASH_A, {"eventId": "evt-1"})
        claim = store.begin("acme", "k1", HASH_B)
        assert claim.outcome is ClaimOutcome.CONFLICT
        assert claim.result is None

    def test_hash_that_is_a_prefix_of_the_stored_one_is_conflict(
        self, store: IdempotencyStore
    ) -> None:
        store.begin("acme", "k1", HASH_A)
        assert store.begin("acme", "k1", HASH_A[:10]).outcome is ClaimOutcome.CONFLICT
        store.complete("acme", "k1", HASH_A, {})
        assert store.begin("acme", "k1", HASH_A[:10]).outcome is ClaimOutcome.CONFLICT
        assert store.begin("acme", "k1", HASH_A + "a").outcome is ClaimOutcome.CONFLICT

    def test_sources_are_separate(self, store: IdempotencyStore) -> None:
        store.begin("acme", "k1", HASH_A)
        assert store.begin("gh", "k1", HASH_B).outcome is ClaimOutcome.NEW

    def test_long_and_odd_keys(self, store: IdempotencyStore) -> None:
        key = "ключ:{x}|" * 1000
        assert store.begin("acme", key, HASH_A).outcome is ClaimOutcome.NEW
        assert store.begin("acme", key, HASH_A).outcome is ClaimOutcome.IN_FLIGHT
        assert len(store.redis_key("acme", key)) < 100

    def test_hash_with_separator_is_refused(self, store: IdempotencyStore) -> None:
        with pytest.raises(ValueError):
            store.begin("acme", "k1", "a|b")

    def test_works_with_decoded_responses(self, redis_url: str) -> None:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            store = IdempotencyStore(client, ttl_seconds=60)
            store.begin("acme", "dec", HASH_A)
            store.complete("acme", "dec", HASH_A, {"eventId": "e"})
            assert store.begin("acme", "dec", HASH_A).result == {"eventId": "e"}
        finally:
            client.close()


class TestCompleteAndRelease:
    def test_release_lets_the_client_retry(self, store: IdempotencyStore) -> None:
        store.begin("acme", "k1", HASH_A)
        store.release("acme", "k1")
        assert store.begin("acme", "k1", HASH_B).outcome is ClaimOutcome.NEW

    def test_release_keeps_completed_keys(self, store: IdempotencyStore) -> None:
        store.begin("acme", "k1", HASH_A)
        store.complete("acme", "k1", HASH_A, {"eventId": "e1"})
        store.release("acme", "k1")
        assert store.begin("acme", "k1", HASH_A).outcome is ClaimOutcome.DUPLICATE

    def test_first_completion_wins(self, store: IdempotencyStore) -> None:
        store.begin("acme", "k1", HASH_A)
        store.complete("acme", "k1", HASH_A, {"eventId": "first"})
        store.complete("acme", "k1", HASH_A, {"eventId": "second"})
        assert store.begin("acme", "k1", HASH_A).result == {"eventId": "first"}

    def test_completion_does_not_overwrite_another_bodys_claim(
        self, store: IdempotencyStore
    ) -> None:
        store.begin("acme", "k1", HASH_B)
        store.complete("acme", "k1", HASH_A, {"eventId": "late"})
        assert store.begin("acme", "k1", HASH_B).outcome is ClaimOutcome.IN_FLIGHT

    def test_completion_after_claim_expired_is_recorded(self, store: IdempotencyStore) -> None:
        store.complete("acme", "k1", HASH_A, {"eventId": "e1"})
        assert store.begin("acme", "k1", HASH_A).result == {"eventId": "e1"}


class TestExpiry:
    def test_in_flight_claim_expires(self, redis_client: redis.Redis) -> None:
        store = IdempotencyStore(redis_client, ttl_seconds=3600, inflight_ttl_seconds=0.2)
        store.begin("acme", "k1", HASH_A)
        key = store.redis_key("acme", "k1")
        assert 0 < redis_client.pttl(key) <= 200
        wait_for(lambda: not redis_client.exists(key), timeout=5, message="claim expiry")
        assert store.begin("acme", "k1", HASH_B).outcome is ClaimOutcome.NEW

    def test_completed_key_expires_after_ttl(self, redis_client: redis.Redis) -> None:
        store = IdempotencyStore(redis_client, ttl_seconds=0.3, inflight_ttl_seconds=60)
        store.begin("acme", "k1", HASH_A)
        store.complete("acme", "k1", HASH_A, {"eventId": "e1"})
        key = store.redis_key("acme", "k1")
        assert 0 < redis_client.pttl(key) <= 300
        wait_for(lambda: not redis_client.exists(key), timeout=5, message="completion expiry")
        assert store.begin("acme", "k1", HASH_A).outcome is ClaimOutcome.NEW

    def test_every_key_has_a_ttl(self, store: IdempotencyStore, redis_client: redis.Redis) -> None:
        store.begin_many("acme", [(f"k{i}", HASH_A) for i in range(10)])
        store.complete_many("acme", [(f"k{i}", HASH_A, {}) for i in range(5)])
        keys = list(redis_client.scan_iter(b"i:*"))
        assert len(keys) == 10
        assert all(redis_client.pttl(key) > 0 for key in keys)

    def test_invalid_ttls_are_refused(self, redis_client: redis.Redis) -> None:
        with pytest.raises(ValueError):
            IdempotencyStore(redis_client, ttl_seconds=0)


class TestConcurrency:
    def test_exactly_one_of_many_concurrent_claims_is_new(self, store: IdempotencyStore) -> None:
        barrier = threading.Barrier(20)

        def claim(_: int) -> ClaimOutcome:
            barrier.wait()
            return store.begin("acme", "race", HASH_A).outcome

        with ThreadPoolExecutor(max_workers=20) as pool:
            outcomes = list(pool.map(claim, range(20)))
        assert outcomes.count(ClaimOutcome.NEW) == 1
        assert outcomes.count(ClaimOutcome.IN_FLIGHT) == 19

    def test_concurrent_batches_claim_each_key_once(self, store: IdempotencyStore) -> None:
        items = [(f"k{i}", HASH_A) for i in range(200)]
        barrier = threading.Barrier(8)

        def claim(_: int) -> list[Claim]:
            barrier.wait()
            return store.begin_many("acme", items)

        with ThreadPoolExecutor(max_workers=8) as pool:
            batches = list(pool.map(claim, range(8)))
        for index in range(len(items)):
            outcomes = [batch[index].outcome for batch in batches]
            assert outcomes.count(ClaimOutcome.NEW) == 1


class TestBatches:
    def test_begin_many_reports_each_outcome_in_order(self, store: IdempotencyStore) -> None:
        store.begin("acme", "inflight", HASH_A)
        store.begin("acme", "done", HASH_A)
        store.complete("acme", "done", HASH_A, {"eventId": "evt-done"})
        claims = store.begin_many(
            "acme",
            [
                ("fresh", HASH_A),
                ("inflight", HASH_A),
                ("done", HASH_A),
                ("done", HASH_B),
            ],
        )
        assert [c.key for c in claims] == ["fresh", "inflight", "done", "done"]
        assert [c.outcome for c in claims] == [
            ClaimOutcome.NEW,
            ClaimOutcome.IN_FLIGHT,
            ClaimOutcome.DUPLICATE,
            ClaimOutcome.CONFLICT,
        ]
        assert claims[2].result == {"eventId": "evt-done"}

    def test_key_repeated_within_a_batch(self, store: IdempotencyStore) -> None:
        claims = store.begin_many("acme", [("k", HASH_A), ("k", HASH_A), ("k", HASH_B)])
        assert [c.outcome for c in claims] == [
            ClaimOutcome.NEW,
            ClaimOutcome.IN_FLIGHT,
            ClaimOutcome.CONFLICT,
        ]

    def test_complete_many_then_duplicates(self, store: IdempotencyStore) -> None:
        items = [(f"k{i}", HASH_A) for i in range(50)]
        assert {c.outcome for c in store.begin_many("acme", items)} == {ClaimOutcome.NEW}
        store.complete_many("acme", [(k, h, {"eventId": f"e-{k}"}) for k, h in items])
        claims = store.begin_many("acme", items)
        assert [c.result for c in claims] == [{"eventId": f"e-{k}"} for k, _ in items]

    def test_batch_is_one_round_trip(
        self, store: IdempotencyStore, redis_client: redis.Redis
    ) -> None:
        store.begin("acme", "warm-up", HASH_A)  # loads the script
        before = _script_calls(redis_client)
        store.begin_many("acme", [(f"k{i}", HASH_A) for i in range(500)])
        assert _script_calls(redis_client) - before == 1

    def test_batch_larger_than_one_call(self, store: IdempotencyStore) -> None:
        items = [(f"k{i}", HASH_A) for i in range(5001)]
        assert len(store.begin_many("acme", items)) == 5001
        assert store.begin("acme", "k5000", HASH_A).outcome is ClaimOutcome.IN_FLIGHT

    def test_release_many_and_empty_batches(self, store: IdempotencyStore) -> None:
        store.begin_many("acme", [("a", HASH_A), ("b", HASH_A)])
        store.release_many("acme", ["a", "b"])
        assert store.begin_many("acme", []) == []
        store.complete_many("acme", [])
        assert store.begin("acme", "a", HASH_B).outcome is ClaimOutcome.NEW


def _script_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("eval", "evalsha")
    )


class TestIdempotencyKey:
    def test_idempotency_key_header_comes_first(self) -> None:
        headers = {"Idempotency-Key": "idem", "webhook-id": "msg"}
        assert idempotency_key(headers, {"id": "evt"}, "id", HASH_A) == "idem"

    def test_webhook_id_next(self) -> None:
        assert idempotency_key({"Webhook-Id": "msg"}, {"id": "evt"}, "id", HASH_A) == "msg"

    def test_event_field_next(self) -> None:
        assert idempotency_key({}, {"id": "evt"}, "id", HASH_A) == "evt"
        assert idempotency_key({}, {"id": 17}, "id", HASH_A) == "17"

    def test_dotted_event_field(self) -> None:
        event = {"meta": {"delivery": {"id": "d-1"}}, "a.b": "literal"}
        assert idempotency_key({}, event, "meta.delivery.id", HASH_A) == "d-1"
        assert idempotency_key({}, event, "a.b", HASH_A) == "literal"

    @pytest.mark.parametrize(
        "event,field",
        [
            ({"id": ""}, "id"),
            ({"id": None}, "id"),
            ({"id": True}, "id"),
            ({"id": {}}, "id"),
            ({"other": "x"}, "id"),
            ({"id": "x"}, None),
            (["id"], "id"),
            (None, "id"),
            ({"meta": "x"}, "meta.id"),
        ],
    )
    def test_canonical_hash_last(self, event: object, field: str | None) -> None:
        headers = {"Idempotency-Key": "  ", "webhook-id": ""}
        assert idempotency_key(headers, event, field, HASH_A) == HASH_A
