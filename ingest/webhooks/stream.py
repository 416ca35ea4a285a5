"""Accepting webhook events: one Redis round trip charges, claims and appends each event durably.

Every source has a Redis Stream of the events accepted for it and not yet stored
(``ingest:wh:{<source>}:events``). One Lua script, run atomically, decides a request:

1. backpressure: a source with ``http.backpressure.highWaterMark`` events or more waiting to
   be stored (a counter beside the stream, ``waiting_key``, which drains decrement as they
   delete what they stored) refuses the request (503) before anything is charged;
2. the token buckets (``ingest.ratelimit``): every bucket pays, or the request is refused
   (429) and nothing else happens;
3. the idempotency key (``ingest.webhooks.idempotency``): a key seen before answers duplicate
   (200), in flight (409) or conflict (422);
4. otherwise the event is appended (``XADD``) and its key remembered as accepted, in the same
   step: Redis applies all of it or none of it, and with AOF on the event is as durable as
   the key. The web answers 202 when the script returns; nothing waits on a batch window.

A batch request's accepted events go into one stream entry (``entry_fields`` describes both
kinds): a 1,000-event batch costs Redis one append, and a drain one read and one delete,
instead of a thousand each.

A worker's dispatcher is woken through a Pub/Sub channel (at most one message per source in
a few milliseconds), and drain tasks read the stream through a consumer group
(``ingest.webhooks.drain``). A lost wake-up only delays a drain: dispatchers also poll.

The scripts are sent through :class:`~ingest.webhooks.idempotency.CoalescedScript`: concurrent
requests of one process share round trips under load, each still its own atomic script.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from ingest.ratelimit import TAKE_TOKENS_LUA, RateDecision, TokenBucket
from ingest.webhooks.idempotency import (
    _OUTCOMES,
    CLAIM_LUA,
    Claim,
    ClaimOutcome,
    CoalescedScript,
    IdempotencyStore,
    _result,
    _text,
    content_mark,
)

__all__ = [
    "GROUP",
    "SOURCES_KEY",
    "WAKE_CHANNEL",
    "Accepted",
    "EventStreams",
    "Refused",
    "batch_entry_shared",
    "entry_fields",
    "kick_key",
    "stream_key",
    "waiting_key",
]

GROUP = "store"  # the consumer group every worker's drain tasks read through
_JSON_LIST = json.JSONEncoder(separators=(",", ":"))  # ASCII: a batch entry's K and O texts
SOURCES_KEY = "ingest:wh:sources"  # a set of every source name that has a stream
WAKE_CHANNEL = "ingest:wh:wake"  # Pub/Sub: a source name, when its stream has new events
KICK_MS = 5  # at most one wake-up per source in this many milliseconds


def stream_key(source: str) -> str:
    """The Redis Stream of a source's accepted, not yet stored events."""
    return f"ingest:wh:{{{source}}}:events"


def waiting_key(source: str) -> str:
    """How many accepted events of a source wait to be stored (entries hold one or many)."""
    return f"ingest:wh:{{{source}}}:waiting"


def kick_key(source: str) -> str:
    """Set for ``KICK_MS`` after a wake-up was published, so bursts publish once."""
    return f"ingest:wh:{{{source}}}:kick"


# Appends one event and wakes the dispatchers (at most once per KICK_MS). ARGV from index c:
# the wake channel, the source name, then the entry's field/value pairs. KEYS: stream, kick,
# the waiting counter.
_APPEND_LUA = """
local function append(stream, kick, waiting, c)
  local id = redis.call('XADD', stream, '*', unpack(ARGV, c + 2))
  redis.call('INCR', waiting)
  if redis.call('SET', kick, '1', 'NX', 'PX', KICK_MS) then
    redis.call('PUBLISH', ARGV[c], ARGV[c + 1])
  end
  return id
end
""".replace("KICK_MS", str(KICK_MS))

# One event. KEYS: the n buckets, the idempotency key ('' for none), the stream, the kick key,
# the waiting counter.
# ARGV: n, cost, now, rate and burst of each bucket (take_tokens' input), then at a = 4 + 2n:
# the key's TTL in ms, the content mark, the high-water mark (0: none), then _APPEND_LUA's.
# Reply: {'B', length} when the stream is full; else take_tokens' reply, followed, when every
# bucket paid, by the claim's code and its stored result (or the new entry's id).
_ACCEPT_ONE = (
    TAKE_TOKENS_LUA
    + CLAIM_LUA
    + _APPEND_LUA
    + """
local n = tonumber(ARGV[1])
local a = 4 + 2 * n
local stream, kick, waiting = KEYS[n + 2], KEYS[n + 3], KEYS[n + 4]
local high = tonumber(ARGV[a + 2])
if high > 0 then
  local length = tonumber(redis.call('GET', waiting) or '0')
  if length >= high then return {'B', tostring(length)} end
end
local paid, out = take_tokens(n, tonumber(ARGV[2]), ARGV[3], 4)
if not paid then return out end
local key, mark = KEYS[n + 1], ARGV[a + 1]
if key ~= '' then
  local value = redis.call('SET', key, mark, 'NX', 'PX', ARGV[a], 'GET')
  if value then
    local code, payload = judge(value, mark)
    out[#out + 1] = code
    out[#out + 1] = payload
    return out
  end
end
out[#out + 1] = 'N'
out[#out + 1] = append(stream, kick, waiting, a + 3)
return out
"""
)

# Many events of one source (a batch request, already charged), appended as one entry. KEYS:
# stream, kick, waiting counter, then one idempotency key per event ('' for none). ARGV: TTL
# in ms, high-water mark, the wake channel, the source, s (how many ARGV the entry's shared
# field/value pairs take), those pairs, then the request's events as four texts (E, K, H, O:
# see entry_fields), then each event's content mark. The texts go into the entry as they
# are; when some claims are not new, the entry's A field says which events were accepted
# (one character per event, 'N' for accepted). Returns {'B', waiting} when full, else the
# codes (a character per event) and each duplicate's result.
_ACCEPT_BATCH = (
    CLAIM_LUA
    + """
local stream, kick, waiting = KEYS[1], KEYS[2], KEYS[3]
local high, s = tonumber(ARGV[2]), tonumber(ARGV[5])
if high > 0 then
  local length = tonumber(redis.call('GET', waiting) or '0')
  if length >= high then return {'B', tostring(length)} end
end
local codes, out, n = {}, {''}, 0
local marks = 9 + s
for i = 1, #KEYS - 3 do
  local key, mark = KEYS[3 + i], ARGV[marks + i]
  local code, payload = 'N', ''
  if key ~= '' then
    local value = redis.call('SET', key, mark, 'NX', 'PX', ARGV[1], 'GET')
    if value then code, payload = judge(value, mark) end
  end
  if code == 'N' then
    n = n + 1
  elseif code == 'D' then
    out[#out + 1] = payload
  end
  codes[i] = code
end
out[1] = table.concat(codes)
if n > 0 then
  local fields = {}
  for i = 1, s do fields[i] = ARGV[5 + i] end
  local more = {'n', tostring(n), 'E', ARGV[6 + s], 'K', ARGV[7 + s], 'H', ARGV[8 + s],
    'O', ARGV[9 + s]}
  if n < #codes then more[#more + 1] = 'A'; more[#more + 1] = out[1] end
  for _, v in ipairs(more) do fields[#fields + 1] = v end
  redis.call('XADD', stream, '*', unpack(fields))
  redis.call('INCRBY', waiting, n)
  if redis.call('SET', kick, '1', 'NX', 'PX', KICK_MS) then
    redis.call('PUBLISH', ARGV[3], ARGV[4])
  end
end
return out
""".replace("KICK_MS", str(KICK_MS))
)


@dataclass(frozen=True)
class Refused:
    """The stream is at its high-water mark: nothing was charged, claimed or appended."""

    length: int


@dataclass(frozen=True)
class Accepted:
    """What accepting one event decided: the buckets' decisions, and the claim when they paid
    (``None``: a bucket refused, nothing else happened). A ``NEW`` claim's event is durable."""

    decisions: list[RateDecision]
    claim: Claim | None


def entry_fields(
    event_json: str,
    event_id: str,
    content_hash: str,
    received_at: float,
    observed_at: str | None,
    source_uri: str,
    purpose: str,
    classification: str | None,
    trace: str | None = None,
) -> list[str]:
    """A single event's stream entry, as field/value pairs (read by
    ``ingest.webhooks.drain.StreamEntry``).

    Purpose and classification travel with each event, so a later config change or a DLQ
    replay stores it under the terms it was accepted with. A batch request's entry has the
    fields its events share (:func:`batch_entry_shared`: ``r``, ``u``, ``p``, ``c``, ``t``) and,
    for the request's events, ``E`` (their canonical JSON, one per line: canonical JSON holds no
    raw newline), ``K`` (their ids, a JSON array), ``H`` (their content hashes, 64 hex digits
    each, end to end), ``O`` (their observedAt, a JSON array), ``n`` (how many were accepted)
    and, when not all were, ``A`` (one character per event, ``N`` for the accepted ones).
    """
    fields = [
        "e", event_json,
        "k", event_id,
        "h", content_hash,
        "r", repr(received_at),
        "u", source_uri,
        "p", purpose,
    ]  # fmt: skip
    if observed_at is not None:
        fields += ["o", observed_at]
    if classification is not None:
        fields += ["c", classification]
    if trace:
        fields += ["t", trace]
    return fields


def batch_entry_shared(
    received_at: float,
    source_uri: str,
    purpose: str,
    classification: str | None,
    trace: str | None = None,
) -> list[str]:
    """The field/value pairs every event of one batch request shares (see entry_fields)."""
    fields = ["r", repr(received_at), "u", source_uri, "p", purpose]
    if classification is not None:
        fields += ["c", classification]
    if trace:
        fields += ["t", trace]
    return fields


class EventStreams:
    """The accept side of the webhook streams, for one Redis (the rate limits' and keys')."""

    def __init__(
        self,
        client: redis.Redis,
        buckets: TokenBucket,
        keys: IdempotencyStore | None,
        high_water_mark: int,
    ) -> None:
        self._client = client
        self._buckets = buckets
        self._keys = keys
        self._high = high_water_mark
        self._one = CoalescedScript(client, _ACCEPT_ONE)
        self._batch = CoalescedScript(client, _ACCEPT_BATCH)
        self._groups: set[str] = set()

    def ensure_group(self, source: str) -> None:
        """Create the source's stream and consumer group unless this process did already, and
        name the source in ``SOURCES_KEY`` (the dispatchers' list of streams to poll)."""
        if source in self._groups:
            return
        self._client.sadd(SOURCES_KEY, source)
        try:
            self._client.xgroup_create(stream_key(source), GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(source)

    def accept_one(
        self,
        source: str,
        checks: Sequence[tuple[str, float, int]],
        key: str | None,
        content_hash: str,
        fields: Sequence[str],
    ) -> Accepted | Refused:
        """Charge one token from each bucket, claim ``key`` (None: idempotency off) and append
        the event, in one round trip; see the module's docstring for the order."""
        self.ensure_group(source)
        bucket_keys, bucket_args = self._buckets.script_input(checks, 1)
        store = self._keys
        claimed: str | bytes = "" if key is None or store is None else store.redis_key(source, key)
        ttl = store.ttl_ms if store is not None else 1
        reply: list[Any] = self._one(
            [*bucket_keys, claimed, stream_key(source), kick_key(source), waiting_key(source)],
            [
                len(checks),
                *bucket_args,
                ttl,
                content_mark(content_hash),
                self._high,
                WAKE_CHANNEL,
                source,
                *fields,
            ],
        )
        if _text(reply[0]) == "B":
            return Refused(int(_text(reply[1])))
        decisions = self._buckets.read_reply(checks, 1, reply)
        if len(reply) == len(checks) + 1:
            return Accepted(decisions, None)
        code = _text(reply[-2])
        outcome = _OUTCOMES[code]
        result = _result(_text(reply[-1])) if outcome is ClaimOutcome.DUPLICATE else None
        return Accepted(decisions, Claim(outcome=outcome, key=key or content_hash, result=result))

    def accept_batch(
        self,
        source: str,
        shared: Sequence[str],
        items: Sequence[tuple[str | None, str, str, str, str | None]],
    ) -> list[ClaimOutcome] | Refused:
        """Claim each ``(key, content_hash, canonical JSON, event id, observedAt)`` (already
        charged; key None: no claim) and append the events whose claim is new as one entry
        with the ``shared`` field/value pairs (:func:`batch_entry_shared`), in one round trip.
        Outcomes come back in order."""
        self.ensure_group(source)
        store = self._keys
        keys: list[str | bytes] = [stream_key(source), kick_key(source), waiting_key(source)]
        if store is None:
            keys += [""] * len(items)
        else:
            keys += ["" if key is None else store.redis_key(source, key) for key, *_ in items]
        args: list[Any] = [store.ttl_ms if store else 1, self._high, WAKE_CHANNEL, source]
        args += [len(shared), *shared]
        args += [
            "\n".join(event_json for _, _, event_json, _, _ in items),
            _JSON_LIST.encode([event_id for _, _, _, event_id, _ in items]),
            "".join(content_hash for _, content_hash, _, _, _ in items),
            _JSON_LIST.encode([observed for _, _, _, _, observed in items]),
        ]
        args += [content_mark(content_hash) for _, content_hash, _, _, _ in items]
        reply = self._batch(keys, args)
        if _text(reply[0]) == "B":
            return Refused(int(_text(reply[1])))
        return [_OUTCOMES[code] for code in _text(reply[0])]
