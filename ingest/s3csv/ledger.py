"""The import ledger: every planned range (and the scan) of a running import, with a lease.

A range enters the ledger ``planned`` when its chunk is dispatched, becomes ``leased`` when a
range task starts it (a heartbeat renews the lease while it runs), and ends ``done`` or
``failed`` with its summary credited. Whatever has no result when its lease runs out — a
worker killed mid-range, a message lost between kombu's ``BRPOP`` and its unacked record —
is found by :class:`ledger sweepers <ingest.s3csv.sweeper.LedgerSweeper>` and sent again.
Ranges are idempotent per object version, so a second run costs work, never a second copy.

Layout in Redis, per import (``{ns}:{importId}:...``):

- ``ledger``: hash range id -> state (``planned``, ``leased``, ``done``, ``failed``);
- ``leases``: sorted set of what is still owed a result (range ids and ``@scan``), scored by
  the time its lease runs out; empty once every registered range has a result;
- ``specs``: hash range id -> the range task's spec (JSON), to dispatch it again;
- ``progress``: the last time anything of the import moved (a lease taken or renewed, a
  result), for the stall bound;
- ``blocked``: since when a range of the import has been waiting for room in the DLQ (its
  retries take leases, which count as progress), cleared when a range gets its result;

and ``{ns}:ledger:active``, the set of imports the sweepers look at.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import redis

__all__ = ["SCAN", "ImportLedger", "RangeState"]

RangeState = Literal["planned", "leased", "done", "failed"]
SCAN = "@scan"  # the member of ``leases`` that stands for the import's scan
FINAL = ("done", "failed")

# KEYS: ledger, leases, specs, progress, active. ARGV: now, deadline, import id, ttl,
# then (range id, spec) pairs. Ranges already final keep their state.
_REGISTER = """
for i = 5, #ARGV, 2 do
  local rid = ARGV[i]
  redis.call('HSET', KEYS[3], rid, ARGV[i + 1])
  local state = redis.call('HGET', KEYS[1], rid)
  if state ~= 'done' and state ~= 'failed' then
    if state ~= 'leased' then redis.call('HSET', KEYS[1], rid, 'planned') end
    redis.call('ZADD', KEYS[2], 'NX', ARGV[2], rid)
  end
end
redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[4])
redis.call('SADD', KEYS[5], ARGV[3])
for k = 1, 3 do redis.call('EXPIRE', KEYS[k], ARGV[4]) end
return 1
"""

# KEYS: ledger, leases, progress. ARGV: range id (or @scan), now, deadline, ttl.
# Takes or renews a lease, unless the range already has its result.
_LEASE = """
if ARGV[1] ~= '@scan' then
  local state = redis.call('HGET', KEYS[1], ARGV[1])
  if state == 'done' or state == 'failed' then return 0 end
  redis.call('HSET', KEYS[1], ARGV[1], 'leased')
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[4])
return 1
"""

# KEYS: ledger, leases, progress. ARGV: range id, state, now, ttl.
_SETTLE = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[4])
return 1
"""

# KEYS: ledger, leases. ARGV: member, now, new deadline.
# Of several sweepers that saw the same expired lease, exactly one gets 1: the claim moves
# the deadline in the same step.
_CLAIM = """
local due = redis.call('ZSCORE', KEYS[2], ARGV[1])
if (not due) or tonumber(due) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
if ARGV[1] ~= '@scan' then redis.call('HSET', KEYS[1], ARGV[1], 'planned') end
return 1
"""


class ImportLedger:
    """Range states and leases of imports in Redis; safe to use from many processes at once."""

    def __init__(
        self,
        client: redis.Redis,
        lease_seconds: float = 60.0,
        namespace: str = "ingest:import",
        ttl: int = 30 * 86400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.lease_seconds = lease_seconds
        self.namespace = namespace
        self.ttl = ttl
        self.clock = clock
        self._register = client.register_script(_REGISTER)
        self._lease = client.register_script(_LEASE)
        self._settle = client.register_script(_SETTLE)
        self._claim = client.register_script(_CLAIM)

    # -- keys --------------------------------------------------------------------------------
    def _key(self, import_id: str, part: str) -> str:
        return f"{self.namespace}:{import_id}:{part}"

    @property
    def active_key(self) -> str:
        return f"{self.namespace}:ledger:active"

    def plan_key(self, import_id: str) -> str:
        """The import's plan: every range spec, in dispatch order (written by the scan)."""
        return self._key(import_id, "plan")

    def _keys(self, import_id: str) -> list[str]:
        return [self._key(import_id, p) for p in ("ledger", "leases", "progress")]

    # -- the scan ----------------------------------------------------------------------------
    def track(self, import_id: str) -> None:
        """A new import: its scan is owed a result within a lease (its message may be lost)."""
        self.lease_scan(import_id)
        self.client.sadd(self.active_key, import_id)

    def lease_scan(self, import_id: str, seconds: float | None = None) -> None:
        """The scan started (or is still running, or will retry in ``seconds``)."""
        self.lease(import_id, SCAN, seconds)

    def scan_done(self, import_id: str) -> None:
        """The scan planned the import (or failed it): no more scan is owed."""
        now = self.clock()
        with self.client.pipeline() as pipe:
            pipe.zrem(self._key(import_id, "leases"), SCAN)
            pipe.set(self._key(import_id, "progress"), now, ex=self.ttl)
            pipe.execute()

    # -- ranges ------------------------------------------------------------------------------
    def register(self, import_id: str, ranges: Iterable[tuple[str, str]]) -> None:
        """Ranges about to be dispatched, as (range id, spec JSON): each owes a result."""
        pairs = list(ranges)
        now = self.clock()
        keys = [*(self._key(import_id, p) for p in ("ledger", "leases", "specs", "progress"))]
        keys.append(self.active_key)
        for start in range(0, len(pairs), 500):
            argv: list[Any] = [now, now + self.lease_seconds, import_id, self.ttl]
            for range_id, spec in pairs[start : start + 500]:
                argv += [range_id, spec]
            self._register(keys=keys, args=argv)

    def lease(self, import_id: str, member: str, seconds: float | None = None) -> bool:
        """Take or renew the lease of a range (or ``SCAN``); False when it has its result."""
        now = self.clock()
        deadline = now + (self.lease_seconds if seconds is None else seconds)
        return bool(self._lease(keys=self._keys(import_id), args=[member, now, deadline, self.ttl]))

    def settle(self, import_id: str, range_id: str, failed: bool) -> None:
        """The range has its result (credited before this call): ``done`` or ``failed``."""
        state = "failed" if failed else "done"
        self._settle(keys=self._keys(import_id), args=[range_id, state, self.clock(), self.ttl])
        self.client.delete(self._key(import_id, "blocked"))

    def block(self, import_id: str) -> None:
        """A range of the import cannot put its rejects into the DLQ (it is full) and waits
        for room: from the first such wait until a range gets its result, the stall bound
        counts, whatever leases the waiting range's retries take."""
        self.client.set(self._key(import_id, "blocked"), self.clock(), nx=True, ex=self.ttl)

    def blocked_seconds(self, import_id: str, now: float | None = None) -> float:
        """Seconds a range of the import has been waiting for room in the DLQ (0: none)."""
        now = self.clock() if now is None else now
        raw = self.client.get(self._key(import_id, "blocked"))
        return max(0.0, now - float(raw)) if raw else 0.0

    @contextmanager
    def heartbeat(self, import_id: str, member: str) -> Iterator[None]:
        """Hold the lease of ``member`` while the block runs: renewed every third of a lease."""
        self.lease(import_id, member)
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.lease_seconds / 3):
                try:
                    self.lease(import_id, member)
                except redis.RedisError:  # Redis away for a moment: the next beat may pass
                    continue

        beat = threading.Thread(target=renew, name=f"lease-{member[:12]}", daemon=True)
        beat.start()
        try:
            yield
        finally:
            stop.set()

    # -- what the sweepers read ----------------------------------------------------------------
    def active(self) -> list[str]:
        return sorted(m.decode() for m in self.client.smembers(self.active_key))

    def forget(self, import_id: str) -> None:
        """The import is final: sweepers stop looking at it."""
        self.client.srem(self.active_key, import_id)

    def due(self, import_id: str, now: float | None = None, limit: int = 500) -> list[str]:
        """Members (range ids, ``SCAN``) whose lease ran out without a result."""
        now = self.clock() if now is None else now
        found = self.client.zrangebyscore(
            self._key(import_id, "leases"), "-inf", now, start=0, num=limit
        )
        return [m.decode() for m in found]

    def claim(self, import_id: str, member: str, now: float | None = None) -> bool:
        """Claim an expired lease to dispatch it again; True for exactly one claimant."""
        now = self.clock() if now is None else now
        keys = [self._key(import_id, "ledger"), self._key(import_id, "leases")]
        return bool(self._claim(keys=keys, args=[member, now, now + self.lease_seconds]))

    def state(self, import_id: str, range_id: str) -> RangeState | None:
        raw = self.client.hget(self._key(import_id, "ledger"), range_id)
        return raw.decode() if raw else None

    def states(self, import_id: str) -> dict[str, str]:
        raw = self.client.hgetall(self._key(import_id, "ledger"))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def spec(self, import_id: str, range_id: str) -> str | None:
        raw = self.client.hget(self._key(import_id, "specs"), range_id)
        return raw.decode() if raw else None

    def outstanding(self, import_id: str) -> int:
        """How many registered ranges (and the scan) still owe a result."""
        return int(self.client.zcard(self._key(import_id, "leases")))

    def idle_seconds(self, import_id: str, now: float | None = None) -> float:
        """Seconds since anything of the import moved (0 when never recorded)."""
        now = self.clock() if now is None else now
        raw = self.client.get(self._key(import_id, "progress"))
        return max(0.0, now - float(raw)) if raw else 0.0

    def planned_specs(self, import_id: str) -> list[str]:
        """Every range spec of the import's plan, dispatched or not."""
        return [s.decode() for s in self.client.lrange(self.plan_key(import_id), 0, -1)]
