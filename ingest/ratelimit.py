"""Token buckets kept in Redis and updated by one Lua script, so every process shares each limit.

Refill uses the Redis server's clock by default, so the clocks of the web hosts do not matter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis

__all__ = [
    "TAKE_TOKENS_LUA",
    "RateDecision",
    "TokenBucket",
    "most_restrictive",
    "ratelimit_headers",
]

# Stored per bucket: a hash {t: tokens, ts: milliseconds of the last charge}. A missing key is a
# full bucket, so state expires once it would have refilled anyway and denials write nothing.
# A Lua function, so that other scripts can charge buckets in the same step as their own work
# (see ingest.webhooks.idempotency): the buckets are KEYS[1..n]; bucket i's rate and burst are
# ARGV[a + 2i - 2] and ARGV[a + 2i - 1]; ``now_ms`` '' means the Redis server's clock. It
# returns whether every bucket could pay (and so was charged) and the reply ``take_many`` reads.
TAKE_TOKENS_LUA = """
local function take_tokens(n, cost, now_ms, a)
  local now
  if now_ms == '' then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
  else
    now = tonumber(now_ms)
  end
  local levels, stamps = {}, {}
  local all = true
  for i = 1, n do
    local per_ms = tonumber(ARGV[a + 2 * i - 2]) / 1000
    local burst = tonumber(ARGV[a + 2 * i - 1])
    local state = redis.call('HMGET', KEYS[i], 't', 'ts')
    local level, stamp = burst, now
    if state[1] and state[2] then
      stamp = math.max(now, tonumber(state[2]))
      level = math.min(burst, tonumber(state[1]) + (stamp - tonumber(state[2])) * per_ms)
    end
    levels[i], stamps[i] = level, stamp
    if level + 1e-9 < cost then all = false end
  end
  local out = {all and 1 or 0}
  for i = 1, n do
    if all and cost > 0 then
      local per_ms = tonumber(ARGV[a + 2 * i - 2]) / 1000
      local burst = tonumber(ARGV[a + 2 * i - 1])
      levels[i] = math.max(0, levels[i] - cost)
      redis.call('HSET', KEYS[i], 't', string.format('%.6f', levels[i]),
                 'ts', string.format('%.3f', stamps[i]))
      redis.call('PEXPIRE', KEYS[i], math.ceil(burst / per_ms) + 1000)
    end
    out[#out + 1] = string.format('%.6f', levels[i])
  end
  return all, out
end
"""

# ARGV: cost, now in ms ('' for the server's clock), then rate and burst of each bucket.
_TAKE = (
    TAKE_TOKENS_LUA
    + """
local _, out = take_tokens(#KEYS, tonumber(ARGV[1]), ARGV[2], 3)
return out
"""
)


@dataclass(frozen=True)
class RateDecision:
    """The state of one bucket after a ``take``.

    ``policy`` follows draft-ietf-httpapi-ratelimit-headers (``RateLimit-Policy``):
    ``"<name>";q=<burst>;w=<seconds to refill the whole burst>``. In ``take_many`` each
    decision tells whether its own bucket could pay; the request was charged only when all could.
    """

    allowed: bool
    remaining: int
    retry_after_seconds: float
    reset_seconds: float
    limit: int
    policy: str
    name: str = "default"


class TokenBucket:
    """Named token buckets in Redis under ``<namespace>:<name>``, checked atomically."""

    def __init__(self, redis_client: redis.Redis, namespace: str = "ingest:rl") -> None:
        self._namespace = namespace
        self._script = redis_client.register_script(_TAKE)

    def take(
        self,
        name: str,
        rate_per_second: float,
        burst: int,
        cost: int = 1,
        now: float | None = None,
    ) -> RateDecision:
        """Take ``cost`` tokens from bucket ``name`` if it holds them; ``now`` is for tests."""
        return self.take_many([(name, rate_per_second, burst)], cost, now)[0]

    def take_many(
        self,
        checks: Sequence[tuple[str, float, int]],
        cost: int = 1,
        now: float | None = None,
    ) -> list[RateDecision]:
        """Take ``cost`` from every ``(name, rate, burst)`` bucket, or from none if one is short.

        A cost above a bucket's burst can never be granted; callers should cap or split it.
        """
        keys, args = self.script_input(checks, cost, now)
        if not keys:
            return []
        return self.read_reply(checks, cost, self._script(keys=keys, args=args))

    def script_input(
        self, checks: Sequence[tuple[str, float, int]], cost: int, now: float | None = None
    ) -> tuple[list[str], list[str | int | float]]:
        """The bucket keys and the ARGV of ``take_tokens`` (see ``TAKE_TOKENS_LUA``): cost,
        now, then rate and burst of each bucket; the function's ``a`` is then 3. Raises
        ``ValueError`` for checks no bucket could serve (see ``take_many``)."""
        _check(checks, cost)
        args: list[str | int | float] = [cost, "" if now is None else repr(now * 1000)]
        for _, rate, burst in checks:
            args += [repr(float(rate)), burst]
        return [f"{self._namespace}:{name}" for name, _, _ in checks], args

    @staticmethod
    def read_reply(
        checks: Sequence[tuple[str, float, int]], cost: int, reply: Sequence[Any]
    ) -> list[RateDecision]:
        """The decisions in the reply of ``take_tokens``: charged flag, then each level."""
        charged = int(reply[0]) == 1
        return [
            _decision(name, float(rate), burst, cost, float(level), charged)
            for (name, rate, burst), level in zip(checks, reply[1 : len(checks) + 1], strict=True)
        ]


def most_restrictive(decisions: Sequence[RateDecision]) -> RateDecision:
    """Return the denial with the longest wait, else the decision with the fewest tokens left."""
    if not decisions:
        raise ValueError("no rate-limit decisions")
    denied = [d for d in decisions if not d.allowed]
    if denied:
        return max(denied, key=lambda d: d.retry_after_seconds)
    return min(decisions, key=lambda d: d.remaining)


def ratelimit_headers(decision: RateDecision | Sequence[RateDecision]) -> dict[str, str]:
    """Return ``RateLimit``, ``RateLimit-Policy`` and, when denied, ``Retry-After`` headers.

    ``RateLimit`` is ``"<name>";r=<remaining>;t=<seconds until full>`` per bucket; ``Retry-After``
    is whole seconds, rounded up, at least 1.
    """
    decisions = [decision] if isinstance(decision, RateDecision) else list(decision)
    if not decisions:
        return {}
    headers = {
        "RateLimit": ", ".join(
            f"{_sf_string(d.name)};r={d.remaining};t={math.ceil(d.reset_seconds)}"
            for d in decisions
        ),
        "RateLimit-Policy": ", ".join(d.policy for d in decisions),
    }
    if not all(d.allowed for d in decisions):
        wait = max(d.retry_after_seconds for d in decisions)
        headers["Retry-After"] = str(max(1, math.ceil(wait)))
    return headers


def _check(checks: Sequence[tuple[str, float, int]], cost: int) -> None:
    if cost < 0:
        raise ValueError("cost must not be negative")
    names = [name for name, _, _ in checks]
    if len(set(names)) != len(names) or not all(names):
        raise ValueError("bucket names must be non-empty and distinct")
    for name, rate, burst in checks:
        if not rate > 0 or burst < 1:
            raise ValueError(f"bucket {name!r} needs a positive rate and a burst of at least 1")


def _decision(
    name: str, rate: float, burst: int, cost: int, level: float, charged: bool
) -> RateDecision:
    # The epsilon absorbs float refill error, e.g. 0.1 s at 10/s giving 0.9999999 of a token.
    could_pay = charged or level + 1e-9 >= cost
    retry_after = 0.0 if could_pay else (cost - level) / rate
    return RateDecision(
        allowed=could_pay,
        remaining=max(0, math.floor(level + 1e-9)),
        retry_after_seconds=retry_after,
        reset_seconds=max(0.0, (burst - level) / rate),
        limit=burst,
        policy=_policy(name, rate, burst),
        name=name,
    )


@lru_cache(maxsize=1024)  # one per configured bucket; built on every request otherwise
def _policy(name: str, rate: float, burst: int) -> str:
    window = max(1, math.ceil(burst / rate))
    return f"{_sf_string(name)};q={burst};w={window}"


@lru_cache(maxsize=1024)  # bucket names are few and fixed; quoting one walks every character
def _sf_string(value: str) -> str:
    """Quote ``value`` as a structured-field string, dropping what such a string cannot hold."""
    printable = "".join(ch for ch in value if " " <= ch <= "~")
    return '"' + printable.replace("\\", "\\\\").replace('"', '\\"') + '"'
