"""Idempotency keys kept in Redis, so every web process agrees on which requests it has seen.

A key is claimed atomically (``begin``), then marked completed with a small result (``complete``)
or released when the request failed before it was made durable (``release``).
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

__all__ = [
    "MAX_KEYS_PER_CALL",
    "Claim",
    "ClaimOutcome",
    "IdempotencyStore",
    "idempotency_key",
]

# Bounds the time one script call holds Redis; bigger batches take a few round trips.
MAX_KEYS_PER_CALL = 5000

# Values are "I|<hash>" while in flight and "D|<hash>|<result json>" once completed.
_BEGIN = """
local out = {}
for i, key in ipairs(KEYS) do
  local hash = ARGV[i + 1]
  local value = redis.call('GET', key)
  if not value then
    redis.call('SET', key, 'I|' .. hash, 'PX', ARGV[1])
    out[#out + 1] = 'N'
    out[#out + 1] = ''
  else
    local stored = string.sub(value, 3, 2 + #hash)
    local sep = string.sub(value, 3 + #hash, 3 + #hash)
    if stored ~= hash or (sep ~= '' and sep ~= '|') then
      out[#out + 1] = 'C'
      out[#out + 1] = ''
    elseif string.sub(value, 1, 1) == 'D' then
      out[#out + 1] = 'D'
      out[#out + 1] = string.sub(value, 4 + #hash)
    else
      out[#out + 1] = 'F'
      out[#out + 1] = ''
    end
  end
end
return out
"""

# Completion never overwrites a different body's claim nor an earlier completion; it does
# record a completion whose in-flight claim expired, because the work is durable by now.
_COMPLETE = """
local written = 0
for i, key in ipairs(KEYS) do
  local hash = ARGV[2 * i]
  local value = redis.call('GET', key)
  if (not value) or value == 'I|' .. hash then
    redis.call('SET', key, 'D|' .. hash .. '|' .. ARGV[2 * i + 1], 'PX', ARGV[1])
    written = written + 1
  end
end
return written
"""

_RELEASE = """
local released = 0
for _, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  if value and string.sub(value, 1, 2) == 'I|' then
    redis.call('DEL', key)
    released = released + 1
  end
end
return released
"""


class ClaimOutcome(enum.Enum):
    """What ``begin`` found for a key."""

    NEW = "new"
    DUPLICATE = "duplicate"
    IN_FLIGHT = "in_flight"
    CONFLICT = "conflict"


_OUTCOMES = {
    "N": ClaimOutcome.NEW,
    "D": ClaimOutcome.DUPLICATE,
    "F": ClaimOutcome.IN_FLIGHT,
    "C": ClaimOutcome.CONFLICT,
}


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming ``key``; ``result`` is the stored result of a ``DUPLICATE``."""

    outcome: ClaimOutcome
    key: str
    result: dict[str, Any] | None = field(default=None)


def idempotency_key(
    headers: Mapping[str, str],
    event: object | None,
    event_field: str | None,
    canonical_hash: str,
) -> str:
    """Return the first present of: ``Idempotency-Key``, ``webhook-id``, event field, hash."""
    lowered = {str(name).lower(): value for name, value in headers.items()}
    for name in ("idempotency-key", "webhook-id"):
        value = lowered.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    if event_field:
        value = _event_field(event, event_field)
        if value is not None:
            return value
    return canonical_hash


def _event_field(event: object | None, path: str) -> str | None:
    """Look ``path`` up in a dict event: the literal key first, then as a dotted path."""
    if not isinstance(event, Mapping):
        return None
    if path in event:
        return _key_text(event[path])
    current: object = event
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    return _key_text(current)


def _key_text(value: object) -> str | None:
    # Only scalars identify an event; a bool, null or object in that field is ignored.
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


class IdempotencyStore:
    """Claims, completions and releases of idempotency keys, each batch in one Redis round trip.

    Key layout: ``<namespace>:{<source>}:<sha256 hex of the key>``. Hashing bounds the size of
    client-chosen keys; the braces make one source's keys share a Redis Cluster slot, which the
    multi-key scripts need. A key repeated within one ``begin_many`` call sees its own earlier
    claim, so the repeat comes back ``IN_FLIGHT`` (same hash) or ``CONFLICT``.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        ttl_seconds: float,
        namespace: str = "ingest:idem",
        inflight_ttl_seconds: float = 60,
    ) -> None:
        if ttl_seconds <= 0 or inflight_ttl_seconds <= 0:
            raise ValueError("idempotency TTLs must be positive")
        self._redis = redis_client
        self._ttl_ms = _millis(ttl_seconds)
        self._inflight_ms = _millis(inflight_ttl_seconds)
        self._namespace = namespace
        self._begin = redis_client.register_script(_BEGIN)
        self._complete = redis_client.register_script(_COMPLETE)
        self._release = redis_client.register_script(_RELEASE)

    def redis_key(self, source: str, key: str) -> str:
        """Return the Redis key that holds ``key`` of ``source``."""
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{self._namespace}:{{{source}}}:{digest}"

    def begin(self, source: str, key: str, content_hash: str) -> Claim:
        """Claim ``key`` for a body with ``content_hash``; see ``ClaimOutcome``."""
        return self.begin_many(source, [(key, content_hash)])[0]

    def begin_many(self, source: str, items: Sequence[tuple[str, str]]) -> list[Claim]:
        """Claim every ``(key, content_hash)`` pair atomically; claims come back in order."""
        for _, content_hash in items:
            _check_hash(content_hash)
        claims: list[Claim] = []
        for chunk in _chunks(items):
            keys = [self.redis_key(source, key) for key, _ in chunk]
            args = [self._inflight_ms, *(content_hash for _, content_hash in chunk)]
            reply = self._begin(keys=keys, args=args)
            for index, (key, _) in enumerate(chunk):
                code, payload = _text(reply[2 * index]), _text(reply[2 * index + 1])
                outcome = _OUTCOMES[code]
                result = _result(payload) if outcome is ClaimOutcome.DUPLICATE else None
                claims.append(Claim(outcome=outcome, key=key, result=result))
        return claims

    def complete(self, source: str, key: str, content_hash: str, result: dict[str, Any]) -> None:
        """Mark ``key`` completed with ``result``, remembered for ``ttl_seconds``."""
        self.complete_many(source, [(key, content_hash, result)])

    def complete_many(self, source: str, items: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        """Mark every ``(key, content_hash, result)`` completed in one round trip per chunk."""
        for _, content_hash, _ in items:
            _check_hash(content_hash)
        for chunk in _chunks(items):
            args: list[str | int] = [self._ttl_ms]
            for _, content_hash, result in chunk:
                args += [content_hash, json.dumps(result, separators=(",", ":"), default=str)]
            self._complete(keys=[self.redis_key(source, key) for key, _, _ in chunk], args=args)

    def release(self, source: str, key: str) -> None:
        """Drop an in-flight claim of ``key`` so that the client may retry; completions stay."""
        self.release_many(source, [key])

    def release_many(self, source: str, keys: Sequence[str]) -> None:
        """Drop the in-flight claims of ``keys``; completed keys are left alone."""
        for chunk in _chunks(keys):
            self._release(keys=[self.redis_key(source, key) for key in chunk])


def _millis(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _check_hash(content_hash: str) -> None:
    # The stored value uses "|" as separator; a hash containing it would make parsing ambiguous.
    if not content_hash or "|" in content_hash:
        raise ValueError("content hash must be non-empty and must not contain '|'")


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + MAX_KEYS_PER_CALL] for i in range(0, len(items), MAX_KEYS_PER_CALL)]


def _text(value: bytes | str) -> str:
    # The client may or may not have been built with decode_responses=True.
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _result(payload: str) -> dict[str, Any]:
    try:
        value = json.loads(payload) if payload else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
