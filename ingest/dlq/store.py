"""The dead-letter queue in Redis: add, list, count, retry claims, purge, export and import."""

from __future__ import annotations

import builtins
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import IO, Any

import redis

from ingest.dlq.model import (
    RETRY_HISTORY_LIMIT,
    DeadLetterEntry,
    EntryKind,
    FailureDetail,
    RetryRecord,
    utc_now_iso,
)

__all__ = ["AddResult", "DeadLetterQueue", "DeadLetterQueueFull"]

_SCAN_CHUNK = 500
log = logging.getLogger("ingest.dlq")


class DeadLetterQueueFull(Exception):
    """Raised instead of adding when the entries would take the DLQ past ``max_entries``."""

    def __init__(self, depth: int, max_entries: int, requested: int) -> None:
        # The arguments themselves are the exception's args, so it pickles and crosses
        # Celery's result backend intact.
        super().__init__(depth, max_entries, requested)
        self.depth, self.max_entries, self.requested = depth, max_entries, requested

    def __str__(self) -> str:
        return (
            f"dead-letter queue full: {self.depth} of {self.max_entries} entries, "
            f"{self.requested} more refused"
        )


@dataclass(frozen=True)
class AddResult:
    """The outcome of an add: every id given, how many were new, the depth afterwards."""

    ids: builtins.list[str]
    added: int
    depth: int
    over_threshold: bool


# ARGV: prefix, max_entries, then per entry: id, kind, source, import id ('' if none), json.
# Checks the bound for the whole batch before writing anything, so a batch is all or nothing.
_ADD = """
local p, max = ARGV[1], tonumber(ARGV[2])
local fresh, seen = {}, {}
for i = 3, #ARGV, 5 do
  local id = ARGV[i]
  if not seen[id] and redis.call('EXISTS', p .. ':entry:' .. id) == 0 then fresh[#fresh + 1] = i end
  seen[id] = true
end
local depth = redis.call('ZCARD', p .. ':order')
if depth + #fresh > max then return {-1, depth} end
for _, i in ipairs(fresh) do
  local id, kind, src, imp = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local seq = redis.call('INCR', p .. ':seq')
  redis.call('HSET', p .. ':entry:' .. id, 'kind', kind, 'source', src, 'import', imp,
             'json', ARGV[i + 4])
  redis.call('ZADD', p .. ':order', seq, id)
  redis.call('ZADD', p .. ':kind:' .. kind, seq, id)
  redis.call('ZADD', p .. ':source:' .. src, seq, id)
  if imp ~= '' then redis.call('ZADD', p .. ':import:' .. imp, seq, id) end
end
return {#fresh, depth + #fresh}
"""

# ARGV: prefix, ids... Drops each entry with its index memberships and any retry lease.
_REMOVE = """
local p, removed = ARGV[1], 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local meta = redis.call('HMGET', p .. ':entry:' .. id, 'kind', 'source', 'import')
  if meta[1] then
    redis.call('DEL', p .. ':entry:' .. id, p .. ':claim:' .. id)
    redis.call('ZREM', p .. ':order', id)
    redis.call('ZREM', p .. ':kind:' .. meta[1], id)
    redis.call('ZREM', p .. ':source:' .. meta[2], id)
    if meta[3] ~= '' then redis.call('ZREM', p .. ':import:' .. meta[3], id) end
    removed = removed + 1
  end
end
return removed
"""

# KEYS: entry, claim. ARGV: owner token, lease seconds. Only existing entries can be claimed.
_CLAIM = """if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2]) and 1 or 0"""

# KEYS: claim. ARGV: owner token. Deletes the lease only if this owner still holds it.
_RELEASE = """if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])"""


def _matches(
    entry: DeadLetterEntry, kind: str | None, source: str | None, import_id: str | None
) -> bool:
    return (
        (kind is None or entry.kind == kind)
        and (source is None or entry.source == source)
        and (import_id is None or entry.import_id == import_id)
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class DeadLetterQueue:
    """A bounded, durable dead-letter queue in Redis, ordered oldest first and indexed by kind,
    source and import id; adding refuses (never evicts) once ``max_entries`` is reached."""

    def __init__(
        self,
        redis_client: redis.Redis,
        namespace: str = "ingest:dlq",
        max_entries: int = 100_000,
        warn_threshold: int = 1_000,
        on_threshold: Callable[[int], None] | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.redis, self.namespace = redis_client, namespace
        self.max_entries, self.warn_threshold = max_entries, warn_threshold
        self.on_threshold = on_threshold
        self.owner = f"{uuid.uuid4().hex}"  # identifies this instance's retry leases
        self._add = redis_client.register_script(_ADD)
        self._remove = redis_client.register_script(_REMOVE)
        self._claim = redis_client.register_script(_CLAIM)
        self._release = redis_client.register_script(_RELEASE)

    def _key(self, *parts: str) -> str:
        return ":".join((self.namespace, *parts))

    def add(self, entry: DeadLetterEntry) -> str:
        """Add one entry (a no-op when its id is already in) and return its id."""
        return self.add_detailed([entry]).ids[0]

    def add_many(self, entries: Iterable[DeadLetterEntry]) -> builtins.list[str]:
        """Add entries atomically in one round trip: all of them, or none if over the bound."""
        return self.add_detailed(entries).ids

    def add_detailed(self, entries: Iterable[DeadLetterEntry]) -> AddResult:
        """Add entries as ``add_many`` does and report how many were new and the depth after.

        Entries whose id is already present are left as they are (attempts unchanged).
        Raises ``DeadLetterQueueFull`` when the new ones would exceed ``max_entries``.
        """
        batch = builtins.list(entries)
        if not batch:
            depth = self.depth()
            return AddResult([], 0, depth, depth >= self.warn_threshold)
        argv: builtins.list[str | int] = [self.namespace, self.max_entries]
        for e in batch:
            argv += [e.id, e.kind, e.source, e.import_id or "", e.to_json()]
        added, depth = (int(x) for x in self._add(args=argv))
        if added < 0:
            raise DeadLetterQueueFull(depth, self.max_entries, len({e.id for e in batch}))
        over = depth >= self.warn_threshold
        if over and added and self.on_threshold is not None:
            try:
                self.on_threshold(depth)
            except Exception:  # the entries are stored; a broken hook must not undo that
                log.exception("dlq on_threshold callback failed")
        return AddResult([e.id for e in batch], added, depth, over)

    def get(self, entry_id: str) -> DeadLetterEntry | None:
        """The entry with this id, or None."""
        raw = self.redis.hget(self._key("entry", entry_id), "json")
        return None if raw is None else DeadLetterEntry.model_validate_json(raw)

    def list(
        self,
        limit: int = 50,
        kind: EntryKind | None = None,
        source: str | None = None,
        import_id: str | None = None,
        after: str | None = None,
    ) -> builtins.list[DeadLetterEntry]:
        """Up to ``limit`` entries, oldest first, matching every filter given.

        ``after`` is the id of an entry still in the DLQ (the last one of a previous page);
        ``KeyError`` if it has left. Walk with ``iter_entries`` while removing entries.
        """
        start = "-inf"
        if after is not None:
            score = self.redis.zscore(self._key("order"), after)
            if score is None:
                raise KeyError(after)
            start = f"({score}"
        chunk = min(max(limit, 1), _SCAN_CHUNK)
        return builtins.list(islice(self._scan(kind, source, import_id, start, chunk), limit))

    def iter_entries(
        self, kind: EntryKind | None = None, source: str | None = None, import_id: str | None = None
    ) -> Iterator[DeadLetterEntry]:
        """Every matching entry, oldest first, in pages; safe while entries are removed."""
        return self._scan(kind, source, import_id, "-inf", _SCAN_CHUNK)

    def _scan(
        self, kind: str | None, source: str | None, import_id: str | None, start: str, chunk: int
    ) -> Iterator[DeadLetterEntry]:
        # walk the most selective index by score; the other filters are checked per entry,
        # so memory stays at one chunk however large the DLQ is
        index = (
            self._key("import", import_id)
            if import_id is not None
            else self._key("source", source)
            if source is not None
            else self._key("kind", kind)
            if kind is not None
            else self._key("order")
        )
        while True:
            page = self.redis.zrangebyscore(
                index, start, "+inf", start=0, num=chunk, withscores=True
            )
            if not page:
                return
            pipe = self.redis.pipeline(transaction=False)
            for member, _ in page:
                pipe.hget(self._key("entry", _text(member)), "json")
            for raw in pipe.execute():
                if raw is None:  # removed since the index was read
                    continue
                entry = DeadLetterEntry.model_validate_json(raw)
                if _matches(entry, kind, source, import_id):
                    yield entry
            if len(page) < chunk:
                return
            start = f"({page[-1][1]}"

    def count(
        self, kind: EntryKind | None = None, source: str | None = None, import_id: str | None = None
    ) -> int:
        """How many entries match every filter given (all entries without filters)."""
        keys = [
            self._key(name, value)
            for name, value in (("kind", kind), ("source", source), ("import", import_id))
            if value is not None
        ]
        if not keys:
            return self.depth()
        if len(keys) == 1:
            return int(self.redis.zcard(keys[0]))
        return int(self.redis.execute_command("ZINTERCARD", len(keys), *keys))  # Redis >= 7.0

    def depth(self) -> int:
        """The number of entries in the DLQ: its queue length."""
        return int(self.redis.zcard(self._key("order")))

    def record_failure(
        self, entry_id: str, error: Mapping[str, Any] | FailureDetail, reason: str | None = None
    ) -> bool:
        """Note that a retry failed again: attempts + 1, new lastFailedAt, error and history.

        Releases any retry lease on the entry. False if the entry is no longer in the DLQ.
        """
        detail, key = FailureDetail.model_validate(error), self._key("entry", entry_id)

        def update(pipe: redis.client.Pipeline) -> bool:
            raw: Any = pipe.hget(key, "json")  # immediate: the pipeline is WATCHing, not queuing
            if raw is None:
                return False
            entry = _with_failure(DeadLetterEntry.model_validate_json(raw), detail, reason)
            pipe.multi()
            pipe.hset(key, "json", entry.to_json())
            pipe.delete(self._key("claim", entry_id))
            return True

        return bool(self.redis.transaction(update, key, value_from_callable=True))

    def remove(self, entry_id: str) -> bool:
        """Remove an entry whose retry succeeded; False if it was not there."""
        return self.remove_many([entry_id]) == 1

    def remove_many(self, ids: Iterable[str]) -> int:
        """Remove entries by id, atomically; returns how many were there."""
        batch = builtins.list(ids)
        return int(self._remove(args=[self.namespace, *batch])) if batch else 0

    def purge(
        self,
        ids: Iterable[str] | None = None,
        kind: EntryKind | None = None,
        source: str | None = None,
        import_id: str | None = None,
    ) -> int:
        """Delete the given ids, or every entry matching the filters (all with no filter).

        Filters also restrict given ids. Works in atomic chunks, so entries added while a
        purge runs may or may not be removed. Returns how many were deleted.
        """
        if ids is not None:
            wanted = builtins.list(ids)
            if kind is not None or source is not None or import_id is not None:
                wanted = [
                    e.id
                    for e in map(self.get, wanted)
                    if e is not None and _matches(e, kind, source, import_id)
                ]
            return self.remove_many(wanted)
        removed = 0
        page: builtins.list[str] = []
        for entry in self.iter_entries(kind=kind, source=source, import_id=import_id):
            page.append(entry.id)
            if len(page) == _SCAN_CHUNK:
                removed, page = removed + self.remove_many(page), []
        return removed + self.remove_many(page)

    def claim_for_retry(self, entry_id: str, lease_seconds: int = 300) -> bool:
        """Take the retry lease on an entry: True for exactly one of several concurrent callers.

        The lease ends after ``lease_seconds``, on ``release_claim``, ``record_failure`` or
        ``remove``. False when another holds it or the entry is not in the DLQ.
        """
        keys = [self._key("entry", entry_id), self._key("claim", entry_id)]
        return bool(self._claim(keys=keys, args=[self.owner, lease_seconds]))

    def release_claim(self, entry_id: str) -> bool:
        """Give up this instance's lease on an entry (without retrying it)."""
        return bool(self._release(keys=[self._key("claim", entry_id)], args=[self.owner]))

    def export(self, stream: IO[str]) -> int:
        """Write every entry, oldest first, as JSON lines; returns how many."""
        written = 0
        for entry in self.iter_entries():
            stream.write(entry.to_json() + "\n")
            written += 1
        return written

    def import_(self, stream: IO[str], batch_size: int = _SCAN_CHUNK) -> int:
        """Add entries from JSON lines (as ``export`` writes them); returns how many were new.

        Ids already present are skipped. Each batch is atomic against the bound.
        """
        added = 0
        lines = (line for line in stream if line.strip())
        while batch := [DeadLetterEntry.model_validate_json(x) for x in islice(lines, batch_size)]:
            added += self.add_detailed(batch).added
        return added


def _with_failure(
    entry: DeadLetterEntry, detail: FailureDetail, reason: str | None
) -> DeadLetterEntry:
    now = utc_now_iso()
    attempts = entry.attempts + 1
    history = [*entry.retry_history, RetryRecord(attempt=attempts, failed_at=now, error=detail)]
    # validated again rather than model_copy'd, so a new reason is held to the one-line rule
    return DeadLetterEntry.model_validate(
        {
            **dict(entry),
            "attempts": attempts,
            "last_failed_at": now,
            "error": detail,
            "retry_history": history[-RETRY_HISTORY_LIMIT:],
            "reason": reason or entry.reason,
        }
    )
