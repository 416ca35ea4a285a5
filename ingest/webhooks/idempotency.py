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
from json.encoder import encode_basestring_ascii
from typing import Any

import redis

from ingest.webhooks.scripts import CoalescedScript
from ingest.webhooks.signatures import lower_keys

__all__ = [
    "CLAIM_LUA",
    "MAX_KEYS_PER_CALL",
    "Claim",
    "ClaimOutcome",
    "CoalescedScript",
    "IdempotencyStore",
    "content_mark",
    "encode_result",
    "event_key",
    "idempotency_key",
    "key_name",
]

# Bounds the time one script call holds Redis; bigger batches take a few round trips.
MAX_KEYS_PER_CALL = 5000
# json.dumps(result, separators=(",", ":"), default=str), without a new encoder per result:
# the publisher completes every accepted event through this.
_RESULT_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)

# A key is remembered as compactly as Redis allows (see docs/performance.md, idempotency keys):
# its name is ``<namespace>:`` and the first 96 bits of SHA-256 over the source and the key
# (``i:`` and 12 bytes: 14 bytes, the longest name Redis keeps in a 16-byte allocation), and its
# value says what the content was through its *mark* (:func:`content_mark`, the first 64 bits
# of the content hash as a decimal integer, which Redis keeps as an integer, not a string):
#   ``<mark>``            accepted (a duplicate's answer is rebuilt from the request itself),
#   ``I<mark>``           claimed, still in flight,
#   ``R<mark>|<json>``    completed with a stored result (a batch request's per-event results).
# CLAIM_LUA is shared by the claim script here and the webhook streams' accept scripts
# (ingest.webhooks.stream). ``judge`` returns an outcome code (see _OUTCOMES) and, for a
# duplicate with a stored result, that result.
CLAIM_LUA = """
local function judge(value, mark)
  local first = string.sub(value, 1, 1)
  if first == 'I' then
    if string.sub(value, 2) == mark then return 'F', '' end
    return 'C', ''
  elseif first == 'R' then
    local bar = string.find(value, '|', 2, true)
    if bar and string.sub(value, 2, bar - 1) == mark then
      return 'D', string.sub(value, bar + 1)
    end
    return 'C', ''
  end
  if value == mark then return 'D', '' end
  return 'C', ''
end
local function claim(key, mark, px)
  -- SET NX GET (Redis 7.0+): claims an absent key, or returns what it holds, in one call.
  local value = redis.call('SET', key, 'I' .. mark, 'NX', 'PX', px, 'GET')
  if not value then
    return 'N', ''
  end
  return judge(value, mark)
end
"""

# KEYS: the keys to claim; ARGV: the in-flight TTL in ms, then each key's content mark.
# The reply is one string of outcome codes, a character per key, followed by the stored
# result of each duplicate in key order: a batch of new keys is a single bulk string.
_BEGIN = (
    CLAIM_LUA
    + """
local codes, out = {}, {''}
for i, key in ipairs(KEYS) do
  local code, payload = claim(key, ARGV[i + 1], ARGV[1])
  codes[i] = code
  if code == 'D' then
    out[#out + 1] = payload
  end
end
out[1] = table.concat(codes)
return out
"""
)

# Completion never overwrites a different body's claim nor an earlier completion; it does
# record a completion whose in-flight claim expired, because the work is durable by now.
# ARGV: the TTL in ms, then each key's mark and result JSON ('' for none).
_COMPLETE = """
local written = 0
for i, key in ipairs(KEYS) do
  local mark, result = ARGV[2 * i], ARGV[2 * i + 1]
  local value = redis.call('GET', key)
  if (not value) or value == 'I' .. mark then
    if result == '' then
      redis.call('SET', key, mark, 'PX', ARGV[1])
    else
      redis.call('SET', key, 'R' .. mark .. '|' .. result, 'PX', ARGV[1])
    end
    written = written + 1
  end
end
return written
"""

_RELEASE = """
local released = 0
for _, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  if value and string.sub(value, 1, 1) == 'I' then
    redis.call('DEL', key)
    released = released + 1
  end
end
return released
"""


def content_mark(content_hash: str) -> str:
    """The first 64 bits of a hex SHA-256 as a signed decimal integer: what a remembered key
    keeps of its content (Redis stores such a value as an integer, in no extra allocation)."""
    head = b""
    if len(content_hash) == 64:
        try:
            head = bytes.fromhex(content_hash[:16])
        except ValueError:
            head = b""
    if len(head) != 8:
        # Not a hex digest (hand-made input): hash it, so that equal text still gives equal marks.
        head = hashlib.sha256(content_hash.encode("utf-8", "surrogatepass")).digest()[:8]
    return str(int.from_bytes(head, "big", signed=True))


# Bytes of SHA-256 in a key's name: 96 bits keep an accidental collision between two of a
# day's 100 million keys at about 1 in 10^13, and a second preimage (one sender's key landing
# on another's) out of reach.
KEY_DIGEST_BYTES = 12


def key_name(namespace: bytes, source: str, key: str) -> bytes:
    """The Redis key that remembers idempotency ``key`` of ``source``: 12 bytes of SHA-256
    over both (a client-chosen key of any size costs the same), behind ``namespace``."""
    digest = hashlib.sha256(
        source.encode("utf-8", "surrogatepass") + b"\x00" + key.encode("utf-8", "surrogatepass")
    ).digest()
    return namespace + b":" + digest[:KEY_DIGEST_BYTES]


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
    lowered = lower_keys(headers)
    for name in ("idempotency-key", "webhook-id"):
        value = lowered.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    if event_field:
        value = _event_field(event, event_field)
        if value is not None:
            return value
    return canonical_hash


def event_key(event: object | None, event_field: str | None, canonical_hash: str) -> str:
    """``idempotency_key`` without headers (an event of a batch): the event field, else hash."""
    if event_field:
        value = _event_field(event, event_field)
        if value is not None:
            return value
    return canonical_hash


def encode_result(result: dict[str, Any]) -> str:
    """``json.dumps(result, separators=(",", ":"), default=str)``, the same text, made
    without an encoder run when every key and value is a string (as an event's result is)."""
    parts = []
    for name, value in result.items():
        if type(name) is not str or type(value) is not str:
            return _RESULT_ENCODER.encode(result)
        parts.append(encode_basestring_ascii(name) + ":" + encode_basestring_ascii(value))
    return "{" + ",".join(parts) + "}"


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

    Keys are named by :func:`key_name` and hold the values described at ``CLAIM_LUA``. A key
    repeated within one ``begin_many`` call sees its own earlier claim, so the repeat comes
    back ``IN_FLIGHT`` (same content) or ``CONFLICT``. The webhook streams' accept scripts
    (``ingest.webhooks.stream``) claim keys in the same layout, so both agree on every key.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        ttl_seconds: float,
        namespace: str = "i",
        inflight_ttl_seconds: float = 60,
    ) -> None:
        if ttl_seconds <= 0 or inflight_ttl_seconds <= 0:
            raise ValueError("idempotency TTLs must be positive")
        self._redis = redis_client
        self._ttl_ms = _millis(ttl_seconds)
        self._inflight_ms = _millis(inflight_ttl_seconds)
        self._namespace = namespace.encode()
        self._begin = redis_client.register_script(_BEGIN)
        self._complete = redis_client.register_script(_COMPLETE)
        self._release = redis_client.register_script(_RELEASE)

    @property
    def ttl_ms(self) -> int:
        """How long a completed key is remembered, in milliseconds."""
        return self._ttl_ms

    def redis_key(self, source: str, key: str) -> bytes:
        """Return the Redis key that holds ``key`` of ``source``."""
        return key_name(self._namespace, source, key)

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
            args = [self._inflight_ms, *(content_mark(content_hash) for _, content_hash in chunk)]
            reply = self._begin(keys=keys, args=args)
            codes, stored = _text(reply[0]), iter(reply[1:])
            for code, (key, _) in zip(codes, chunk, strict=True):
                outcome = _OUTCOMES[code]
                result = _result(_text(next(stored))) if code == "D" else None
                claims.append(Claim(outcome=outcome, key=key, result=result))
        return claims

    def complete(self, source: str, key: str, content_hash: str, result: dict[str, Any]) -> None:
        """Mark ``key`` completed with ``result``, remembered for ``ttl_seconds``."""
        self.complete_many(source, [(key, content_hash, result)])

    def complete_many(self, source: str, items: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        """Mark every ``(key, content_hash, result)`` completed in one round trip per chunk.

        An empty ``result`` is not stored: a duplicate's answer is then rebuilt from its request.
        """
        for _, content_hash, _ in items:
            _check_hash(content_hash)
        for chunk in _chunks(items):
            args: list[str | int] = [self._ttl_ms]
            for _, content_hash, result in chunk:
                args += [content_mark(content_hash), encode_result(result) if result else ""]
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


def _text(value: bytes | str | int) -> str:
    # The client may or may not have been built with decode_responses=True; Lua integers
    # come back as ints.
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _result(payload: str) -> dict[str, Any]:
    try:
        value = json.loads(payload) if payload else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
