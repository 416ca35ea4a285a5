"""The webhook outbox: every accepted batch is kept in Redis until a worker has stored it.

Kombu's Redis transport takes a message with ``BRPOP`` and records it as unacknowledged with a
second command. A Redis crash between the two (the pop already in the AOF, the record not)
loses the message, and with it events that were answered 202. The outbox closes that gap:

- the web process writes the batch payload here (one ``MULTI``: ``HSET`` + ``ZADD``) *before*
  publishing its message, and answers 202 only after both;
- the worker removes the entry once the batch is stored or dead-lettered, and pushes its due
  time back whenever it schedules a retry;
- a sweeper in every worker republishes entries whose due time has passed
  (``http.redeliverAfter`` seconds after they were written or last republished). The
  sweeping worker's setting decides: the outbox records when an entry was last active.

Storing is idempotent per batch id (the sink's batch name, the dedup claims' owner), so a
republished batch whose first message was only slow, not lost, stores nothing twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import redis

__all__ = ["DUE_KEY", "ENTRIES_KEY", "Outbox", "batch_summary", "publish_batch"]

ENTRIES_KEY = "ingest:webhooks:outbox"  # hash: batchId -> payload JSON
DUE_KEY = "ingest:webhooks:outbox:due"  # sorted set: batchId -> epoch of its last activity

# Takes up to ARGV[3] entries idle since ARGV[1] or longer and marks them active at ARGV[2]
# in the same step, so that of several workers sweeping at once only one republishes each
# entry. An index entry whose payload is gone (stored meanwhile) is dropped.
_CLAIM_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local found = {}
for _, id in ipairs(ids) do
  local payload = redis.call('HGET', KEYS[1], id)
  if payload then
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    table.insert(found, payload)
  else
    redis.call('ZREM', KEYS[2], id)
  end
end
return found
"""


def batch_summary(payload: Mapping[str, Any]) -> str:
    """A batch message's short ``argsrepr``: what operators see in Flower and the worker log.

    It also spares Celery a truncated repr of the whole payload (CPU on every publish).
    """
    events = len(payload.get("events") or [])
    return f"[<webhook batch {payload.get('batchId')} of {payload.get('source')}: {events} events>]"


def publish_batch(celery: Any, task_name: str, queue: str, payload: Mapping[str, Any]) -> None:
    """Publish one batch message (the web's publisher and the workers' sweeper alike)."""
    celery.send_task(
        task_name,
        args=[payload],
        queue=queue,
        argsrepr=batch_summary(payload),
        kwargsrepr="{}",
        ignore_result=True,
    )


class Outbox:
    """Accepted webhook batches not yet stored, by batch id, with the time to republish them."""

    def __init__(self, client: redis.Redis, redeliver_after: float) -> None:
        self._redis = client
        self.redeliver_after = redeliver_after
        self._claim = client.register_script(_CLAIM_DUE)

    def put(self, payload: Mapping[str, Any]) -> None:
        """Keep ``payload`` (which has a ``batchId``) until :meth:`done`; raises if Redis fails."""
        batch_id = str(payload["batchId"])
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(ENTRIES_KEY, batch_id, json.dumps(payload, separators=(",", ":")))
        pipe.zadd(DUE_KEY, {batch_id: time.time()})
        pipe.execute()

    def done(self, batch_id: str) -> None:
        """Forget a batch: stored, dead-lettered or never published."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hdel(ENTRIES_KEY, batch_id)
        pipe.zrem(DUE_KEY, batch_id)
        pipe.execute()

    def postpone(self, batch_id: str, seconds: float) -> None:
        """Count the entry active ``seconds`` from now (when a scheduled retry of it runs)."""
        self._redis.zadd(DUE_KEY, {batch_id: time.time() + seconds}, xx=True)

    def claim_due(self, limit: int = 100, now: float | None = None) -> list[dict[str, Any]]:
        """Payloads idle for ``redeliver_after`` seconds; each counts as active from now."""
        now = time.time() if now is None else now
        found = self._claim(
            keys=[ENTRIES_KEY, DUE_KEY], args=[now - self.redeliver_after, now, limit]
        )
        return [json.loads(raw) for raw in found]

    def pending(self) -> int:
        """How many batches are accepted and not yet stored (or dead-lettered)."""
        return int(self._redis.hlen(ENTRIES_KEY))

    def oldest_activity(self) -> float | None:
        """The earliest last-activity time (epoch seconds), or None when the outbox is empty."""
        first = self._redis.zrange(DUE_KEY, 0, 0, withscores=True)
        return float(first[0][1]) if first else None
