"""Idempotency keys kept in Redis, so every web process agrees on which requests it has seen.

A key is claimed atomically (``begin``), then marked completed with a small result (``complete``)
or released when the request failed before it was made durable (``release``).
"""

from __future__ import annotations

import enum
import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from typing import Any

import redis

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # hiredis is a dependency; without it, the same bytes come from Python
    _hiredis_pack = None  # type: ignore[assignment]

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


@dataclass(eq=False)
class _Call:
    """One call of a :class:`CoalescedScript`: its input, and its reply once there is one."""

    keys: Sequence[Any]
    args: Sequence[Any]
    # Created per call, after any monkey-patching: a gevent event in a gevent worker.
    ready: threading.Event = field(default_factory=lambda: threading.Event())
    reply: Any = None
    error: BaseException | None = None
    answered: bool = False  # a reply or an error is in (a script may well reply nil)
    # Set when this call is handed the queued calls (itself first) to send for everyone.
    batch: list[_Call] | None = None

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.reply


class CoalescedScript:
    """A Lua script whose concurrent calls share Redis round trips (a pipeline).

    A call made while no other is in flight is sent at once, alone: when idle nothing
    waits. Calls made while one is in flight queue up; when it returns, the first of them
    sends every queued call in one pipeline and hands each its reply. Under load, requests
    thus share round trips, which cost a web worker far more CPU (system calls, a greenlet
    switch per read, the client's per-command layers) than the script runs in Redis. Each
    call still runs as its own script, atomically, in the order the calls queued.

    Every call gets its own reply or its own error; a failed round trip fails the calls it
    carried. ``wait_seconds`` bounds how long a queued call waits for its turn before it
    gives up with ``redis.exceptions.TimeoutError`` (the client's own timeouts bound a
    round trip, so only a stuck sender could keep it waiting that long).
    """

    def __init__(self, client: redis.Redis, script: str, wait_seconds: float = 30.0) -> None:
        self._client = client
        self._script = client.register_script(script)
        self._text = script
        self._sha = hashlib.sha1(script.encode("utf-8")).hexdigest()  # as Redis names it
        self._wait = wait_seconds
        self._lock = threading.Lock()
        self._queue: list[_Call] = []
        self._busy = False
        self._conn: Any = None

    def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run the script with ``keys`` and ``args``; return its reply (or raise its error)."""
        call = _Call(keys, args)
        with self._lock:
            lead = not self._busy
            if lead:
                self._busy = True
            else:
                self._queue.append(call)
        if not lead:
            self._await_turn(call)
            if call.batch is None:
                return call.outcome()
        self._send_then_hand_over(call, call.batch or [call])
        return call.outcome()

    def _await_turn(self, call: _Call) -> None:
        """Wait until ``call`` has its reply or was made the sender of the queued calls."""
        while not call.ready.wait(self._wait):
            with self._lock:
                if call in self._queue:
                    self._queue.remove(call)
                    raise redis.exceptions.TimeoutError("no turn to reach Redis in time")
            # Taken into a round trip already: its reply is on the way.

    def _send_then_hand_over(self, own: _Call, batch: list[_Call]) -> None:
        try:
            self._send(batch)
        except Exception as exc:  # the round trip failed: so did every call it carried
            for call in batch:
                # Each its own copy: one instance raised in many greenlets would pile up
                # every raise's frames in its traceback.
                call.error, call.answered = _own_copy(exc), True
        finally:
            for call in batch:
                if not call.answered:  # the sender was interrupted
                    call.error = redis.exceptions.ConnectionError("the round trip was cut off")
                if call is not own:
                    call.ready.set()
            self._hand_over()

    def _hand_over(self) -> None:
        """Make the first queued call the sender of all queued calls, or go idle."""
        with self._lock:
            queued, self._queue = self._queue, []
            self._busy = bool(queued)
        if queued:
            first = queued[0]
            first.batch = queued
            first.ready.set()

    def _send(self, batch: list[_Call]) -> None:
        replies = self._pipeline(batch)
        if any(_no_script(r) for r in replies):
            # Redis restarted or was flushed: load the script once, then run the calls it
            # refused (a refused call did nothing, so running it now is its only run).
            self._client.script_load(self._text)
            missing = [c for c, r in zip(batch, replies, strict=True) if _no_script(r)]
            for call, reply in zip(missing, self._pipeline(missing), strict=True):
                replies[batch.index(call)] = reply
        for call, reply in zip(batch, replies, strict=True):
            if isinstance(reply, Exception):
                call.error = reply
            else:
                call.reply = reply
            call.answered = True

    def _pipeline(self, calls: list[_Call]) -> list[Any]:
        """Send every call's ``EVALSHA`` in one write and read their replies in order.

        The commands are packed here (RESP, one ``bytes.join``) rather than by redis-py,
        whose per-argument encoding cost as much CPU as the rest of a webhook request. A
        write that fails is retried once on a fresh connection (nothing ran); a failure
        after the write is not, since the scripts may have run.
        """
        packed = b"".join(_pack_evalsha(self._sha, call.keys, call.args) for call in calls)
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.send_packed_command([packed], check_health=False)
            except (redis.exceptions.ConnectionError, OSError):
                conn.disconnect()
                if attempt == 2:
                    raise
                continue
            try:
                replies: list[Any] = []
                for _ in calls:
                    try:
                        replies.append(conn.read_response())
                    except redis.exceptions.ResponseError as exc:
                        replies.append(exc)
                return replies
            except BaseException:
                conn.disconnect()
                raise
        raise AssertionError("unreachable")

    def _connection(self) -> Any:
        """This script's own connection: only one round trip is ever in flight (the queued
        calls wait for it), so one connection serves every call, without the pool's
        per-checkout readiness poll. It reconnects by itself after a failure."""
        if self._conn is None:
            pool = self._client.connection_pool
            self._conn = pool.connection_class(**pool.connection_kwargs)
        return self._conn


def _pack_evalsha(sha: str, keys: Sequence[Any], args: Sequence[Any]) -> bytes:
    """``EVALSHA sha len(keys) *keys *args`` as RESP: by hiredis's packer (C, ten times as
    fast on a 1,000-event batch), or in Python for what it refuses (lone surrogates)."""
    if _hiredis_pack is not None:
        try:
            return _hiredis_pack(("EVALSHA", sha, len(keys), *keys, *args))
        except UnicodeEncodeError:
            pass
    return _pack_in_python(sha, keys, args)


def _pack_in_python(sha: str, keys: Sequence[Any], args: Sequence[Any]) -> bytes:
    parts = [b"EVALSHA", sha.encode(), str(len(keys)).encode()]
    parts += [_arg(v) for v in keys]
    parts += [_arg(v) for v in args]
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def _arg(value: Any) -> bytes:
    """An argument as redis-py would encode it."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, bool):
        raise TypeError("booleans are not Redis arguments")
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        return repr(value).encode()
    raise TypeError(f"not a Redis argument: {type(value).__name__}")


def _own_copy(exc: Exception) -> Exception:
    try:
        copy = type(exc)(*exc.args)
    except Exception:
        return exc
    copy.__cause__ = exc
    return copy


def _no_script(reply: Any) -> bool:
    return isinstance(reply, redis.exceptions.NoScriptError)


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
