"""The webhook outbox against a real Redis: keep, claim when due (once), postpone, forget."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import redis

from ingest.http.outbox import DUE_KEY, Outbox


def payload(batch_id: str) -> dict[str, Any]:
    return {"batchId": batch_id, "source": "acme", "events": [{"eventId": "e1"}]}


def test_an_entry_is_claimed_once_when_due_and_again_a_period_later(
    redis_client: redis.Redis,
) -> None:
    outbox = Outbox(redis_client, redeliver_after=60)
    outbox.put(payload("b1"))
    assert outbox.pending() == 1
    assert outbox.claim_due() == []  # not due for a minute

    later = time.time() + 61
    assert outbox.claim_due(now=later) == [payload("b1")]
    # The claim moved its due time: a second sweeper at the same moment gets nothing ...
    assert outbox.claim_due(now=later) == []
    # ... until another period has passed.
    assert outbox.claim_due(now=later + 61) == [payload("b1")]


def test_done_forgets_and_postpone_delays(redis_client: redis.Redis) -> None:
    outbox = Outbox(redis_client, redeliver_after=10)
    outbox.put(payload("b1"))
    outbox.put(payload("b2"))
    outbox.postpone("b2", 100)
    outbox.done("b1")
    assert outbox.pending() == 1
    assert outbox.claim_due(now=time.time() + 50) == []
    assert outbox.claim_due(now=time.time() + 111) == [payload("b2")]


def test_postpone_does_not_create_and_dangling_index_entries_are_dropped(
    redis_client: redis.Redis,
) -> None:
    outbox = Outbox(redis_client, redeliver_after=10)
    outbox.postpone("never-put", 5)
    assert outbox.oldest_activity() is None
    redis_client.zadd(DUE_KEY, {"orphan": 0})  # an index entry without a payload
    assert outbox.claim_due() == []
    assert outbox.oldest_activity() is None


def test_claims_are_bounded_per_call(redis_client: redis.Redis) -> None:
    outbox = Outbox(redis_client, redeliver_after=1)
    for n in range(5):
        outbox.put(payload(f"b{n}"))
    later = time.time() + 2
    first = outbox.claim_due(limit=3, now=later)
    rest = outbox.claim_due(limit=3, now=later)
    assert len(first) == 3 and len(rest) == 2
    assert {p["batchId"] for p in first + rest} == {f"b{n}" for n in range(5)}


def test_a_batch_message_written_with_its_entry_is_the_one_celery_would_publish(
    redis_url: str, redis_client: redis.Redis
) -> None:
    from ingest.config import build_settings
    from ingest.http.outbox import ENTRIES_KEY, broker_message
    from webapp.publisher import QUEUE, TASK_NAME, producer_celery, send_batch, writes_broker

    settings = build_settings({"redisUrl": redis_url})
    assert writes_broker(settings)
    celery = producer_celery(settings)
    send_batch(celery, payload("by-celery"))
    outbox = Outbox(redis_client, redeliver_after=60)
    outbox.put(payload("by-us"), broker_message(celery, TASK_NAME, QUEUE, payload("by-us")))

    assert redis_client.hexists(ENTRIES_KEY, "by-us")
    ours, celerys = (json.loads(m) for m in redis_client.lrange(QUEUE, 0, -1))
    # Same envelope, same headers and properties; only ids, the summary and the body differ.
    assert ours.keys() == celerys.keys()
    varying = {"id", "root_id", "argsrepr", "correlation_id", "delivery_tag"}
    # Properties Celery copies from publish options, and the headers Sentry's Celery
    # integration adds when another test of this session initialised Sentry (with Sentry
    # on, the web publishes through Celery: see webapp.publisher._sentry_traces_publishing).
    extra = {"argsrepr", "kwargsrepr", "sentry-trace", "baggage", "headers"}
    extra |= {"sentry-task-enqueued-time"}
    for part in ("headers", "properties"):
        assert ours[part].keys() - extra == celerys[part].keys() - extra
        same = {k: v for k, v in ours[part].items() if k not in varying}
        assert same == {k: v for k, v in celerys[part].items() if k in same}
    assert ours["headers"]["argsrepr"] == "[<webhook batch by-us of acme: 1 events>]"
    args, kwargs, _ = json.loads(base64.b64decode(ours["body"]))
    assert args == [payload("by-us")] and kwargs == {}
