"""The webhook hot path's shortcuts keep the contract: rate limits, the idempotency claim and
the append in one round trip, concurrent claims sharing round trips, flask-limiter confined to
/admin, and access lines sampled only for successful webhook answers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from flask import Flask

from ingest.config import build_settings
from ingest.hashing import sha256_hex
from ingest.ratelimit import TokenBucket, ratelimit_headers
from ingest.webhooks.drain import StreamDrainer, payloads_of
from ingest.webhooks.idempotency import ClaimOutcome, CoalescedScript, IdempotencyStore
from ingest.webhooks.stream import Accepted, EventStreams, Refused, stream_key, waiting_key
from webapp import create_app, observability

HASH_A = "a" * 64
HASH_B = "b" * 64
CHECKS = (("webhooks:source:acme", 10.0, 3), ("webhooks:global", 100.0, 50))


@pytest.fixture()
def store(redis_client: redis.Redis) -> IdempotencyStore:
    return IdempotencyStore(redis_client, ttl_seconds=3600, inflight_ttl_seconds=60)


@pytest.fixture()
def buckets(redis_client: redis.Redis) -> TokenBucket:
    return TokenBucket(redis_client)


def accept(streams: EventStreams, key: str, content_hash: str) -> Accepted:
    fields = ["e", "{}", "k", key, "h", content_hash, "r", "1.0", "u", "http://x/", "p", "p"]
    found = streams.accept_one("acme", CHECKS, key, content_hash, fields)
    assert isinstance(found, Accepted)
    return found


class TestAcceptOne:
    """Rate limits, the idempotency claim and the append to the stream in one round trip."""

    @pytest.fixture()
    def streams(
        self, redis_client: redis.Redis, store: IdempotencyStore, buckets: TokenBucket
    ) -> EventStreams:
        return EventStreams(redis_client, buckets, store, high_water_mark=100)

    def test_charges_every_bucket_claims_and_appends(
        self, streams: EventStreams, store: IdempotencyStore, redis_client: redis.Redis
    ) -> None:
        accepted = accept(streams, "k1", HASH_A)
        claim = accepted.claim
        assert claim is not None and claim.outcome is ClaimOutcome.NEW and claim.key == "k1"
        assert [d.allowed for d in accepted.decisions] == [True, True]
        assert [d.remaining for d in accepted.decisions] == [2, 49]
        assert store.begin("acme", "k1", HASH_A).outcome is ClaimOutcome.DUPLICATE
        [(_, fields)] = redis_client.xrange(stream_key("acme"))
        assert fields[b"k"] == b"k1" and fields[b"h"] == HASH_A.encode()

    def test_outcomes_match_begin(self, streams: EventStreams, store: IdempotencyStore) -> None:
        store.begin("acme", "busy", HASH_A)
        in_flight = accept(streams, "busy", HASH_A).claim
        assert in_flight is not None and in_flight.outcome is ClaimOutcome.IN_FLIGHT
        accept(streams, "k1", HASH_A)
        conflict = accept(streams, "k1", HASH_B).claim
        assert conflict is not None and conflict.outcome is ClaimOutcome.CONFLICT

    def test_a_duplicate_pays_its_token_and_appends_nothing(
        self, streams: EventStreams, redis_client: redis.Redis
    ) -> None:
        accept(streams, "k1", HASH_A)
        again = accept(streams, "k1", HASH_A)
        assert again.claim is not None and again.claim.outcome is ClaimOutcome.DUPLICATE
        assert again.decisions[0].remaining == 1
        assert redis_client.xlen(stream_key("acme")) == 1

    def test_a_refused_request_claims_and_appends_nothing(
        self, streams: EventStreams, store: IdempotencyStore, redis_client: redis.Redis
    ) -> None:
        for n in range(3):
            accept(streams, f"k{n}", HASH_A)
        refused = accept(streams, "late", HASH_A)
        assert refused.claim is None
        assert [d.allowed for d in refused.decisions] == [False, True]
        assert int(ratelimit_headers(refused.decisions)["Retry-After"]) >= 1
        assert redis_client.get(store.redis_key("acme", "late")) is None
        assert redis_client.xlen(stream_key("acme")) == 3
        # The denial charged no bucket: the global one still holds what three requests left.
        assert refused.decisions[1].remaining == 47

    def test_a_full_stream_refuses_before_charging(
        self, redis_client: redis.Redis, store: IdempotencyStore, buckets: TokenBucket
    ) -> None:
        streams = EventStreams(redis_client, buckets, store, high_water_mark=2)
        accept(streams, "k1", HASH_A)
        accept(streams, "k2", HASH_A)
        full = streams.accept_one("acme", CHECKS, "k3", HASH_A, ["e", "{}"])
        assert isinstance(full, Refused) and full.length == 2
        assert redis_client.get(store.redis_key("acme", "k3")) is None
        assert buckets.take_many(CHECKS)[0].remaining == 0  # two charges, not three

    def test_a_remembered_key_takes_little_memory(
        self, streams: EventStreams, store: IdempotencyStore, redis_client: redis.Redis
    ) -> None:
        accept(streams, "a-long-client-chosen-key-" + "x" * 200, HASH_A)
        key = store.redis_key("acme", "a-long-client-chosen-key-" + "x" * 200)
        # 14 bytes of name (a 16-byte allocation) and an integer value: 56 bytes by MEMORY USAGE
        # (dict entry, name, value object), where a 28-byte name took 72.
        assert len(key) == 14 and redis_client.object("encoding", key) == b"int"
        assert redis_client.memory_usage(key) <= 56


class TestBatchEntries:
    """A batch request's accepted events are one stream entry; the waiting counter follows
    events, not entries."""

    SHARED = ["r", "1733480000.5", "u", "http://x/batch", "p", "case-1"]

    @pytest.fixture()
    def streams(
        self, redis_client: redis.Redis, buckets: TokenBucket, store: IdempotencyStore
    ) -> EventStreams:
        return EventStreams(redis_client, buckets, store, high_water_mark=5)

    def events(self, *names: str) -> list[tuple[str | None, str, str, str, str | None]]:
        return [
            (name, sha256_hex(name.encode()), f'{{"n":"{name}"}}', name, None) for name in names
        ]

    def test_one_entry_holds_the_accepted_events_and_a_drain_reads_them_back(
        self, streams: EventStreams, store: IdempotencyStore, redis_client: redis.Redis
    ) -> None:
        store.begin_many("acme", [("seen", sha256_hex(b"seen"))])
        items = self.events("a", "seen", 'quote"\u2028é')
        items[2] = (*items[2][:4], "2026-12-06T10:00:00.000Z")
        outcomes = streams.accept_batch("acme", self.SHARED, items)
        assert outcomes == [ClaimOutcome.NEW, ClaimOutcome.IN_FLIGHT, ClaimOutcome.NEW]
        assert redis_client.xlen(stream_key("acme")) == 1
        assert redis_client.get(waiting_key("acme")) == b"2"
        drainer = StreamDrainer(
            redis_client, "c1", batch_size=100, redeliver_after=60, max_deliveries=3
        )
        entries = drainer.read_new("acme")
        [payload] = payloads_of("acme", entries)
        assert [e["eventId"] for e in payload["events"]] == ["a", 'quote"\u2028é']
        assert [e["eventJson"] for e in payload["events"]] == [items[0][2], items[2][2]]
        assert [e["contentHash"] for e in payload["events"]] == [items[0][1], items[2][1]]
        assert [e["observedAt"] for e in payload["events"]] == [None, "2026-12-06T10:00:00.000Z"]
        assert payload["events"][0]["receivedAt"] == "2024-12-06T10:13:20.500Z"
        assert (payload["sourceUri"], payload["purpose"]) == ("http://x/batch", "case-1")
        drainer.ack("acme", payload["streamIds"], payload["streamSizes"])
        drainer.ack("acme", payload["streamIds"], payload["streamSizes"])  # a second drain
        assert redis_client.get(waiting_key("acme")) == b"0"

    def test_backpressure_counts_events_not_entries(
        self, streams: EventStreams, redis_client: redis.Redis
    ) -> None:
        assert streams.accept_batch("acme", self.SHARED, self.events("1", "2", "3", "4", "5"))
        refused = streams.accept_batch("acme", self.SHARED, self.events("6"))
        assert isinstance(refused, Refused) and refused.length == 5
        assert redis_client.xlen(stream_key("acme")) == 1

    def test_an_unreadable_entry_is_kept_apart_from_the_others(
        self, streams: EventStreams, redis_client: redis.Redis
    ) -> None:
        streams.accept_batch("acme", self.SHARED, self.events("a"))
        redis_client.xadd(
            stream_key("acme"),
            {
                **dict(zip(self.SHARED[::2], self.SHARED[1::2], strict=True)),
                "n": "2",
                "E": "{}",
                "K": "[",
                "H": "",
                "O": "[]",
            },
        )
        streams.accept_batch("acme", self.SHARED, self.events("b"))
        drainer = StreamDrainer(
            redis_client, "c1", batch_size=100, redeliver_after=60, max_deliveries=3
        )
        good, broken = payloads_of("acme", drainer.read_new("acme"))
        assert [e["eventId"] for e in good["events"]] == ["a", "b"]
        assert len(broken["streamIds"]) == 1 and broken["events"][0]["malformedEntry"]["K"] == "["


class TestCoalescedScript:
    SCRIPT = "if ARGV[1] == 'boom' then return redis.error_reply('boom') end return ARGV[1]"

    def test_every_kind_of_argument_reaches_redis_unchanged(
        self, redis_client: redis.Redis
    ) -> None:
        # hiredis packs most calls; a lone surrogate (valid in a JSON string) is packed in
        # Python with surrogatepass, as redis-py would not.
        script = CoalescedScript(redis_client, "return ARGV")
        values = ["plain", "é\u2028中", "\ud800 alone", b"\x00\xff", 12, -5, 0.1 + 0.2, ""]
        reply = script([], values)
        assert reply == [
            b"plain",
            "é\u2028中".encode(),
            "\ud800 alone".encode("utf-8", "surrogatepass"),
            b"\x00\xff",
            b"12",
            b"-5",
            b"0.30000000000000004",
            b"",
        ]

    def test_concurrent_calls_each_get_their_own_reply(self, redis_client: redis.Redis) -> None:
        script = CoalescedScript(redis_client, self.SCRIPT)
        with ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(lambda n: script([], [str(n)]), range(200)))
        assert replies == [str(n).encode() for n in range(200)]

    def test_calls_queued_behind_one_share_a_round_trip(self, redis_client: redis.Redis) -> None:
        script = CoalescedScript(redis_client, self.SCRIPT)
        gate, sent = threading.Event(), []
        real_send = script._send

        def slow_send(batch: list[Any]) -> None:
            sent.append(len(batch))
            if len(sent) == 1:
                gate.wait(5)  # hold the first round trip until the others have queued
            real_send(batch)

        script._send = slow_send  # type: ignore[method-assign]
        with ThreadPoolExecutor(8) as pool:
            first = pool.submit(script, [], ["first"])
            while not sent:
                threading.Event().wait(0.01)
            rest = [pool.submit(script, [], [str(n)]) for n in range(5)]
            while len(script._queue) < 5:
                threading.Event().wait(0.01)
            gate.set()
            assert first.result() == b"first"
            assert [f.result() for f in rest] == [str(n).encode() for n in range(5)]
        assert sent == [1, 5]

    def test_a_nil_reply_is_a_reply(self, redis_client: redis.Redis) -> None:
        script = CoalescedScript(redis_client, "return nil")
        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(lambda n: script([], [str(n)]), range(40))) == [None] * 40

    def test_an_error_fails_only_its_own_call(self, redis_client: redis.Redis) -> None:
        script = CoalescedScript(redis_client, self.SCRIPT)
        args = ["boom" if n % 3 == 0 else str(n) for n in range(30)]

        def call(arg: str) -> Any:
            try:
                return script([], [arg])
            except redis.exceptions.ResponseError as exc:
                return exc

        with ThreadPoolExecutor(10) as pool:
            results = list(pool.map(call, args))
        for arg, result in zip(args, results, strict=True):
            if arg == "boom":
                assert isinstance(result, redis.exceptions.ResponseError)
            else:
                assert result == arg.encode()

    def test_a_flushed_script_is_loaded_again(self, redis_client: redis.Redis) -> None:
        script = CoalescedScript(redis_client, self.SCRIPT)
        assert script([], ["x"]) == b"x"
        redis_client.script_flush()
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda n: script([], [str(n)]), range(50)))
        assert replies == [str(n).encode() for n in range(50)]

    def test_a_failed_round_trip_fails_its_calls_and_the_next_ones_go_through(
        self, redis_client: redis.Redis
    ) -> None:
        script = CoalescedScript(redis_client, self.SCRIPT)
        real_send, failures = script._send, [1]

        def flaky_send(batch: list[Any]) -> None:
            if failures:
                failures.pop()
                raise redis.exceptions.ConnectionError("gone")
            real_send(batch)

        script._send = flaky_send  # type: ignore[method-assign]
        with pytest.raises(redis.exceptions.ConnectionError):
            script([], ["lost"])
        assert script([], ["next"]) == b"next"
        assert not script._busy and not script._queue


class TestLimiterOnlyOnAdmin:
    @pytest.fixture()
    def app(self) -> Flask:
        return create_app(build_settings({"redisUrl": "redis://127.0.0.1:1/0"}))

    @staticmethod
    def _limiter_hooks(registry: dict[Any, list[Any]], key: str | None) -> list[Any]:
        return [h for h in registry.get(key, []) if "flask_limiter" in repr(h)]

    def test_no_app_wide_limiter_hook(self, app: Flask) -> None:
        for name in ("before_request_funcs", "after_request_funcs", "teardown_request_funcs"):
            registry = getattr(app, name)
            assert not self._limiter_hooks(registry, None), name
            assert self._limiter_hooks(registry, "admin"), name

    def test_the_limit_runs_before_the_token_check(self, app: Flask) -> None:
        hooks = app.before_request_funcs["admin"]
        names = [getattr(h, "__name__", repr(h)) for h in hooks]
        assert names.index("_require_token") > 0
        assert "flask_limiter" in repr(hooks[0])


class TestAccessLogSampling:
    @pytest.fixture(autouse=True)
    def info_level(self) -> Iterator[None]:
        level = observability.access_log.level
        observability.access_log.setLevel("INFO")
        yield
        observability.access_log.setLevel(level)

    def test_only_successful_webhook_answers_are_sampled(self) -> None:
        every = 7
        logged = sum(observability._should_log(True, 202, every) for _ in range(every * 3))
        assert logged == 3
        assert all(observability._should_log(True, s, every) for s in (400, 401, 429, 503))
        assert all(observability._should_log(False, s, every) for s in (200, 202, 404))

    def test_a_sample_of_one_logs_every_answer(self) -> None:
        assert all(observability._should_log(True, 202, 1) for _ in range(5))

    def test_nothing_is_prepared_below_info(self) -> None:
        observability.access_log.setLevel("WARNING")
        assert not observability._should_log(False, 500)


class TestLoweredHeaders:
    def test_same_names_and_values_as_werkzeug(self) -> None:
        from werkzeug.test import EnvironBuilder

        from webapp.webhooks import lowered_headers

        app = Flask("headers")
        builder = EnvironBuilder(
            method="POST",
            headers={"Webhook-Id": "m1", "X_Under": "u", "Idempotency-Key": " k "},
            content_type="application/json",
            data=b"{}",
        )
        environ = builder.get_environ()
        environ["HTTP_CONTENT_TYPE"] = "text/plain"  # werkzeug ignores these two
        with app.test_request_context(environ_overrides=environ):
            from flask import request

            expected = {name.lower(): value for name, value in request.headers.items()}
            assert lowered_headers(request.environ) == expected
