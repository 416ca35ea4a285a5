"""Token buckets against a real Redis: bursts, refill, all-or-nothing checks and headers."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from ingest.ratelimit import RateDecision, TokenBucket, most_restrictive, ratelimit_headers
from tests.support.services import wait_for

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


@pytest.fixture()
def bucket(redis_client: redis.Redis) -> TokenBucket:
    return TokenBucket(redis_client)


class TestTake:
    def test_burst_then_deny(self, bucket: TokenBucket) -> None:
        decisions = [bucket.take("acme", 10, 5, now=T0) for _ in range(6)]
        assert [d.allowed for d in decisions] == [True] * 5 + [False]
        assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
        assert decisions[0].limit == 5

    def test_retry_after_is_time_until_cost_tokens_exist(self, bucket: TokenBucket) -> None:
        for _ in range(5):
            bucket.take("acme", 2, 5, now=T0)
        denied = bucket.take("acme", 2, 5, now=T0 + 0.25)
        assert not denied.allowed
        assert denied.retry_after_seconds == pytest.approx(0.25)
        assert bucket.take(
            "acme", 2, 5, cost=3, now=T0 + 0.25
        ).retry_after_seconds == pytest.approx(1.25)

    def test_allowed_has_no_retry_after_and_reports_reset(self, bucket: TokenBucket) -> None:
        decision = bucket.take("acme", 2, 10, cost=4, now=T0)
        assert decision.retry_after_seconds == 0
        assert decision.reset_seconds == pytest.approx(2.0)
        assert decision.remaining == 6

    def test_refill_over_time(self, bucket: TokenBucket) -> None:
        for _ in range(5):
            bucket.take("acme", 10, 5, now=T0)
        assert not bucket.take("acme", 10, 5, now=T0 + 0.05).allowed
        assert bucket.take("acme", 10, 5, now=T0 + 0.1).allowed
        assert not bucket.take("acme", 10, 5, now=T0 + 0.1).allowed
        refilled = bucket.take("acme", 10, 5, now=T0 + 100)
        assert refilled.allowed
        assert refilled.remaining == 4  # capped at the burst, not 1000 tokens

    def test_clock_going_backwards_does_not_mint_tokens(self, bucket: TokenBucket) -> None:
        for _ in range(5):
            bucket.take("acme", 10, 5, now=T0)
        assert not bucket.take("acme", 10, 5, now=T0 - 50).allowed
        assert not bucket.take("acme", 10, 5, now=T0 + 0.05).allowed

    def test_denial_does_not_charge(self, bucket: TokenBucket) -> None:
        bucket.take("acme", 1, 5, cost=3, now=T0)
        assert not bucket.take("acme", 1, 5, cost=3, now=T0).allowed
        assert bucket.take("acme", 1, 5, cost=2, now=T0).allowed

    def test_cost_above_burst_is_never_granted(self, bucket: TokenBucket) -> None:
        decision = bucket.take("acme", 10, 5, cost=6, now=T0)
        assert not decision.allowed
        assert decision.retry_after_seconds > 0
        assert decision.remaining == 5

    def test_zero_cost_peeks(self, bucket: TokenBucket) -> None:
        bucket.take("acme", 1, 5, cost=2, now=T0)
        assert bucket.take("acme", 1, 5, cost=0, now=T0).remaining == 3

    def test_buckets_are_separate(self, bucket: TokenBucket) -> None:
        bucket.take("acme", 1, 1, now=T0)
        assert bucket.take("gh", 1, 1, now=T0).allowed

    @pytest.mark.parametrize("rate,burst,cost", [(0, 5, 1), (-1, 5, 1), (1, 0, 1), (1, 5, -1)])
    def test_invalid_arguments(
        self, bucket: TokenBucket, rate: float, burst: int, cost: int
    ) -> None:
        with pytest.raises(ValueError):
            bucket.take("acme", rate, burst, cost=cost)


class TestServerClock:
    def test_uses_redis_time_and_refills(self, bucket: TokenBucket) -> None:
        assert bucket.take("live", 20, 1).allowed
        assert not bucket.take("live", 20, 1).allowed
        wait_for(lambda: bucket.take("live", 20, 1).allowed, timeout=5, message="refill")

    def test_state_expires_once_full_again(
        self, bucket: TokenBucket, redis_client: redis.Redis
    ) -> None:
        bucket.take("live", 1000, 100)
        ttl = redis_client.pttl("ingest:rl:live")
        assert 0 < ttl <= 1100
        wait_for(
            lambda: not redis_client.exists("ingest:rl:live"),
            timeout=5,
            message="bucket state expiry",
        )

    def test_concurrent_takes_never_exceed_the_burst(self, bucket: TokenBucket) -> None:
        barrier = threading.Barrier(10)

        def take(_: int) -> int:
            barrier.wait()
            return sum(bucket.take("shared", 0.001, 25).allowed for _ in range(10))

        with ThreadPoolExecutor(max_workers=10) as pool:
            assert sum(pool.map(take, range(10))) == 25


class TestTakeMany:
    CHECKS = [("source:acme", 1.0, 2), ("global", 100.0, 10)]

    def test_charges_every_bucket(self, bucket: TokenBucket) -> None:
        decisions = bucket.take_many(self.CHECKS, now=T0)
        assert [d.allowed for d in decisions] == [True, True]
        assert [d.remaining for d in decisions] == [1, 9]

    def test_all_or_nothing(self, bucket: TokenBucket) -> None:
        bucket.take_many(self.CHECKS, now=T0)
        bucket.take_many(self.CHECKS, now=T0)
        denied = bucket.take_many(self.CHECKS, now=T0)
        assert [d.allowed for d in denied] == [False, True]
        assert denied[1].remaining == 8  # the global bucket was not charged
        assert bucket.take("global", 100.0, 10, now=T0).remaining == 7

    def test_most_restrictive(self, bucket: TokenBucket) -> None:
        allowed = bucket.take_many(self.CHECKS, now=T0)
        assert most_restrictive(allowed).name == "source:acme"
        bucket.take_many(self.CHECKS, now=T0)
        denied = most_restrictive(bucket.take_many(self.CHECKS, now=T0))
        assert (denied.name, denied.allowed) == ("source:acme", False)
        assert denied.retry_after_seconds == pytest.approx(1.0)

    def test_one_script_call(self, bucket: TokenBucket, redis_client: redis.Redis) -> None:
        bucket.take("warm-up", 1, 1)  # loads the script
        before = _script_calls(redis_client)
        bucket.take_many(self.CHECKS, now=T0)
        assert _script_calls(redis_client) - before == 1

    def test_duplicate_names_are_refused(self, bucket: TokenBucket) -> None:
        with pytest.raises(ValueError):
            bucket.take_many([("a", 1, 1), ("a", 2, 2)])

    def test_empty(self, bucket: TokenBucket) -> None:
        assert bucket.take_many([]) == []


def _script_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("eval", "evalsha")
    )


class TestHeaders:
    def test_allowed(self, bucket: TokenBucket) -> None:
        headers = ratelimit_headers(bucket.take("acme", 10, 50, cost=5, now=T0))
        assert headers == {"RateLimit": '"acme";r=45;t=1', "RateLimit-Policy": '"acme";q=50;w=5'}

    def test_denied_retry_after_rounds_up(self, bucket: TokenBucket) -> None:
        bucket.take("acme", 0.4, 1, now=T0)
        headers = ratelimit_headers(bucket.take("acme", 0.4, 1, now=T0))
        assert headers["Retry-After"] == "3"

    def test_retry_after_is_at_least_one_second(self, bucket: TokenBucket) -> None:
        bucket.take("acme", 1000, 1, now=T0)
        headers = ratelimit_headers(bucket.take("acme", 1000, 1, now=T0))
        assert headers["Retry-After"] == "1"

    def test_several_decisions(self, bucket: TokenBucket) -> None:
        bucket.take_many(TestTakeMany.CHECKS, now=T0)
        bucket.take_many(TestTakeMany.CHECKS, now=T0)
        headers = ratelimit_headers(bucket.take_many(TestTakeMany.CHECKS, now=T0))
        assert headers == {
            "RateLimit": '"source:acme";r=0;t=2, "global";r=8;t=1',
            "RateLimit-Policy": '"source:acme";q=2;w=2, "global";q=10;w=1',
            "Retry-After": "1",
        }

    def test_policy_name_is_quoted_safely(self) -> None:
        decision = RateDecision(
            allowed=True,
            remaining=1,
            retry_after_seconds=0,
            reset_seconds=0,
            limit=1,
            policy='"x";q=1;w=1',
            name='a"b\\c\né',
        )
        assert ratelimit_headers(decision)["RateLimit"] == '"a\\"b\\\\c";r=1;t=0'
