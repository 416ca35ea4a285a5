"""Deduplication by record identity across batches, objects and re-runs, kept in Redis.

A record's identity is the first 16 bytes of its SHA-256 (its contentHash, or the hash of its
key fields). A batch *claims* identities: a claimed identity is stored by the batch that
claimed it, and every other batch counts it as a duplicate. Claims are remembered per owner
(the batch's deterministic identity), so a batch that runs again after a crash keeps the rows
it claimed the first time instead of dropping them as duplicates of itself: dedup marks can
never make a re-executed task lose rows.

Key-field identities (``deduplication.keyFields``) of at most 14 bytes are not hashed: the key
itself, length-prefixed, is the identity (exact, and a fifth of the CPU of hashing it), kept
in mark sets of their own (scope ``<scope>#short``) so that no crafted key can equal another
key's hash. Marks that an earlier version wrote for short keys as hashes are still honoured
while they can be live: see :meth:`DedupIndex.claim_keys`.

Marks live in sets per time epoch (``ttl`` seconds long): a claim checks the current and the
previous epoch, so a mark lasts at least ``ttl`` and at most ``2 * ttl``. Sets are split into
partitions by the identity's first byte, so that each Lua call touches one partition and the
keys spread over a Redis Cluster's shards.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import redis

from ingest.hashing import digests_from_hex_text, sha256_digests
from ingest.speedups import native as _speedups  # None where not built: numpy then
from ingest.speedups import value_buffers

if TYPE_CHECKING:  # webhook processes use DedupIndex only: pyarrow loads on first use
    import pyarrow as pa

__all__ = [
    "IDENTITY_BYTES",
    "DedupIndex",
    "first_occurrences",
    "identities_from_digests",
    "identities_from_hex",
    "identities_from_hex_column",
    "key_field_identities",
    "key_texts",
    "short_key_identities",
]

IDENTITY_BYTES = 16
# A key text this long or shorter is its own identity: a byte that spreads identities over the
# partitions, the length, the text, zero bytes to 16.
SHORT_KEY_BYTES = IDENTITY_BYTES - 2
SHORT_SCOPE_SUFFIX = "#short"
# Lua's unpack() has a fixed stack limit; 4000 members a call stays well inside it.
CHUNK = 4000

# KEYS: the current epoch's set, the previous epoch's set, the owner's claim record.
# ARGV: the identities back to back (16 bytes each), the TTL. Returns one '1' (claimed now)
# or '0' (seen before) per identity. Redis runs this single-threaded, so the cost per
# identity is what matters: struct.unpack cuts 50 members per call (a third of the cost of
# one string.sub each), an absent previous epoch is not queried member by member, and a
# call that claims everything (the usual case) appends the blob as it came.
_CLAIM = """
local blob = ARGV[1]
local ttl = tonumber(ARGV[2])
local n = #blob / 16
local members = {}
local batch = 50
local fmt = string.rep('c16', batch)
local m, pos = 0, 1
while n - m >= batch do
  local got = {struct.unpack(fmt, blob, pos)}
  for j = 1, batch do members[m + j] = got[j] end
  m = m + batch
  pos = got[batch + 1]
end
for i = m, n - 1 do members[i + 1] = string.sub(blob, i * 16 + 1, i * 16 + 16) end
local seen = redis.call('SMISMEMBER', KEYS[1], unpack(members))
local older = nil
if redis.call('EXISTS', KEYS[2]) == 1 then
  older = redis.call('SMISMEMBER', KEYS[2], unpack(members))
end
local new, bits = {}, {}
for i = 1, n do
  if seen[i] == 1 or (older and older[i] == 1) then
    bits[i] = '0'
  else
    bits[i] = '1'
    new[#new + 1] = members[i]
  end
end
if #new > 0 then
  redis.call('SADD', KEYS[1], unpack(new))
  redis.call('EXPIRE', KEYS[1], ttl * 2 + 3600)
  redis.call('APPEND', KEYS[3], #new == n and blob or table.concat(new))
  redis.call('EXPIRE', KEYS[3], ttl * 2 + 3600)
end
return table.concat(bits)
"""


# Takes back what an owner claimed (its write failed: nothing of it was stored). KEYS: the
# current epoch's set, the previous epoch's set, the owner's claim record.
_RELEASE = """
local blob = redis.call('GET', KEYS[3])
if not blob then return 0 end
local n = #blob / 16
for i = 0, n - 1 do
  local member = string.sub(blob, i * 16 + 1, i * 16 + 16)
  redis.call('SREM', KEYS[1], member)
  redis.call('SREM', KEYS[2], member)
end
redis.call('DEL', KEYS[3])
return n
"""


def identities_from_hex(hex_hashes: Sequence[str]) -> np.ndarray:
    """Identities (``S16``) from hex SHA-256 strings such as contentHash values."""
    joined = "".join(h[: IDENTITY_BYTES * 2] for h in hex_hashes)
    return np.frombuffer(bytes.fromhex(joined), dtype=f"S{IDENTITY_BYTES}").copy()


def identities_from_digests(digests: np.ndarray) -> np.ndarray:
    """Identities (``S16``) from raw SHA-256 digests of shape ``(n, 32)``."""
    head = np.ascontiguousarray(np.asarray(digests, dtype=np.uint8)[:, :IDENTITY_BYTES])
    return head.view(f"S{IDENTITY_BYTES}").reshape(-1)


def identities_from_hex_column(hashes: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Identities (``S16``) from an Arrow column of hex SHA-256 values, without a per-row loop."""
    return identities_from_digests(digests_from_hex_text(hashes))


def key_texts(frame: Any, fields: Sequence[str]) -> pa.Array:
    """The rows' key-field values as one text each, computed column-wise: the values as text
    joined by U+001F (a null is U+0000; a time is its integer nanoseconds, which is exact and
    cheap to render). ``frame`` is a pandas DataFrame or an Arrow table."""
    import pyarrow as pa
    import pyarrow.compute as pc

    texts = []
    for name in fields:
        if isinstance(frame, pa.Table):
            column: pa.Array | pa.ChunkedArray = frame.column(name)
        else:
            column = pa.array(frame[name], from_pandas=True)
        if pa.types.is_timestamp(column.type):  # the same instant in any unit: nanoseconds
            column = column.cast(pa.timestamp("ns", tz=column.type.tz))
        if pa.types.is_temporal(column.type):
            column = column.cast(pa.int64())
        texts.append(pc.cast(column, pa.string()))
    if len(texts) == 1 and not texts[0].null_count:
        joined = texts[0]  # what the join below gives for one column without nulls, uncopied
    else:
        joined = pc.binary_join_element_wise(
            *texts, "\x1f", null_handling="replace", null_replacement="\x00"
        )
    if isinstance(joined, pa.ChunkedArray):
        joined = joined.combine_chunks() if joined.num_chunks != 1 else joined.chunk(0)
    return joined


def key_field_identities(frame: Any, fields: Sequence[str]) -> np.ndarray:
    """Identities (``S16``) of rows by their key-field values: the SHA-256 of
    :func:`key_texts`, whatever their length (what :meth:`DedupIndex.claim_keys` uses for
    keys over 14 bytes, and what it used for every key before short keys had their own)."""
    return identities_from_digests(sha256_digests(key_texts(frame, fields)))


def short_key_identities(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Which key texts are at most 14 bytes (a mask), and those keys' identities (``S16``).

    A short key's identity is one byte mixed from the rest (for the partition), its length,
    its bytes and zero bytes to 16: distinct texts always have distinct identities.
    """
    import pyarrow as pa

    count = len(texts)
    kind = np.int64 if pa.types.is_large_string(texts.type) else np.int32
    offsets = np.frombuffer(texts.buffers()[1], dtype=kind)[texts.offset : texts.offset + count + 1]
    found = value_buffers(texts)
    if _speedups is not None and found is not None:  # the same identities, in one pass of C
        flags, made = _speedups.short_keys(*found)
        short_ids = np.frombuffer(made, dtype=f"S{IDENTITY_BYTES}")
        return np.frombuffer(flags, dtype=bool), short_ids
    lengths = np.diff(offsets)
    short = lengths <= SHORT_KEY_BYTES
    starts = offsets[:-1][short]
    used = lengths[short]
    ids = np.zeros((len(starts), IDENTITY_BYTES), dtype=np.uint8)
    if len(starts):
        values = np.frombuffer(texts.buffers()[2], dtype=np.uint8)[: int(offsets[-1])]
        padded = np.concatenate((values, np.zeros(SHORT_KEY_BYTES, dtype=np.uint8)))
        # Every short key's 14 bytes from where it starts, then what lies past its end zeroed.
        body = np.lib.stride_tricks.sliding_window_view(padded, SHORT_KEY_BYTES)[starts]
        body[np.arange(SHORT_KEY_BYTES) >= used[:, None]] = 0
        ids[:, 2:] = body
        ids[:, 1] = used
        words = ids.view(np.uint64)
        mixed = (words[:, 0] * np.uint64(0x9E3779B97F4A7C15)) ^ (
            words[:, 1] * np.uint64(0xC2B2AE3D27D4EB4F)
        )
        ids[:, 0] = (mixed >> np.uint64(56)).astype(np.uint8)
    return short, ids.view(f"S{IDENTITY_BYTES}").reshape(-1)


def _take(texts: pa.Array, rows: np.ndarray) -> pa.Array:
    return texts if len(rows) == len(texts) else texts.take(rows)


def first_occurrences(ids: np.ndarray) -> np.ndarray:
    """Ascending positions of the first occurrence of each distinct identity in ``ids``.

    Sorting 16-byte strings is slow; a 64-bit mix of both halves sorts as integers in a
    fraction of the time. Only rows whose mix occurs more than once (true repeats, or a rare
    clash) are compared in full. Both halves count: short keys' identities share their first
    bytes (the same length, a common prefix) far more often than hashes do.
    """
    count = len(ids)
    words = np.ascontiguousarray(ids).view(np.uint64)
    head = words[::2] ^ (words[1::2] * np.uint64(0x9E3779B97F4A7C15))
    ordered = np.sort(head)
    if not bool((ordered[1:] == ordered[:-1]).any()):
        return np.arange(count)
    order = np.argsort(head, kind="stable")
    same = head[order][1:] == head[order][:-1]
    clash = np.zeros(count, dtype=bool)
    clash[1:] |= same
    clash[:-1] |= same
    candidates = np.sort(order[clash])
    _, first = np.unique(ids[candidates], return_index=True)
    keep = np.ones(count, dtype=bool)
    keep[candidates] = False
    keep[candidates[first]] = True
    return np.flatnonzero(keep)


class DedupIndex:
    """Claims record identities in Redis; see the module docstring for the guarantees."""

    def __init__(
        self,
        client: redis.Redis,
        ttl_seconds: int,
        namespace: str = "ingest:dd",
        partitions: int = 16,
    ) -> None:
        if ttl_seconds < 1 or not 1 <= partitions <= 256:
            raise ValueError("ttl_seconds must be >= 1 and partitions 1..256")
        self.client = client
        self.ttl = ttl_seconds
        self.namespace = namespace
        self.partitions = partitions
        self._sha = hashlib.sha1(_CLAIM.encode("utf-8")).hexdigest()  # as Redis names it
        # scope -> (epoch short keys started, whether hashed marks existed then): fixed once set.
        self._short_key_start: dict[str, tuple[int, bool]] = {}
        self._release = client.register_script(_RELEASE)

    def _epoch(self, now: float | None) -> int:
        return int((time.time() if now is None else now) // self.ttl)

    def _set_key(self, scope: str, partition: int, epoch: int) -> str:
        return f"{self.namespace}:{{{scope}:{partition}}}:e{epoch}"

    def _owner_key(self, scope: str, partition: int, owner: str) -> str:
        return f"{self.namespace}:{{{scope}:{partition}}}:own:{owner}"

    def claim(
        self, scope: str, owner: str, identities: np.ndarray, now: float | None = None
    ) -> np.ndarray:
        """Return a mask of the rows ``owner`` stores: first sightings, and rows it claimed before.

        A repeated identity inside ``identities`` is kept at its first position only.
        """
        ids = np.asarray(identities, dtype=f"S{IDENTITY_BYTES}")
        keep = np.zeros(len(ids), dtype=bool)
        if len(ids) == 0:
            return keep
        first = first_occurrences(ids)
        epoch = self._epoch(now)
        leading = np.ascontiguousarray(ids).view(np.uint8)[::IDENTITY_BYTES]
        parts = leading[first] % self.partitions
        # One stable sort groups the rows by partition, each group still in row order.
        by_partition = first[np.argsort(parts, kind="stable")]
        counts = np.bincount(parts, minlength=self.partitions)
        bounds = np.concatenate(([0], np.cumsum(counts)))
        groups = [(int(p), by_partition[bounds[p] : bounds[p + 1]]) for p in np.flatnonzero(counts)]
        # Two round trips whatever the number of partitions: every owner record, then every
        # claim call. Each call is still one atomic script on one partition's keys.
        owner_keys = [self._owner_key(scope, partition, owner) for partition, _ in groups]
        owned = self._pipeline([("GET", key) for key in owner_keys])
        calls: list[tuple[Any, ...]] = []
        chunks: list[np.ndarray] = []
        for (partition, positions), owner_key, mine in zip(groups, owner_keys, owned, strict=True):
            if isinstance(mine, Exception):
                raise mine
            todo = positions
            if mine:  # a re-run: what this owner claimed before is its own again
                mask = np.isin(ids[positions], np.frombuffer(mine, dtype=f"S{IDENTITY_BYTES}"))
                keep[positions[mask]] = True
                todo = positions[~mask]
            keys = (
                self._set_key(scope, partition, epoch),
                self._set_key(scope, partition, epoch - 1),
                owner_key,
            )
            for start in range(0, len(todo), CHUNK):
                chunk = todo[start : start + CHUNK]
                calls.append(("EVALSHA", self._sha, 3, *keys, ids[chunk].tobytes(), self.ttl))
                chunks.append(chunk)
        for chunk, bits in zip(chunks, self._claims(calls), strict=True):
            keep[chunk] = np.frombuffer(bits, dtype=np.uint8) == ord("1")
        return keep

    def claim_keys(
        self, scope: str, owner: str, texts: pa.Array, now: float | None = None
    ) -> np.ndarray:
        """:meth:`claim` for rows identified by key texts (:func:`key_texts`, no nulls).

        Keys of at most 14 bytes are claimed as themselves in the scope ``<scope>#short``;
        longer ones by their SHA-256 in ``scope``, as before. Until the end of the epoch after
        the one in which a scope first saw short keys, and only if ``scope`` then held marks
        (written by a version that hashed every key), short keys are also claimed by their
        hash in ``scope``: a row is stored only if both find it new, so a key stored before
        an upgrade is still a duplicate after it. A rolling upgrade that keeps old workers
        running longer than one ``ttl`` after the first new one would lose that overlap.
        """
        keep = np.zeros(len(texts), dtype=bool)
        if len(texts) == 0:
            return keep
        short, raw = short_key_identities(texts)
        short_rows = np.flatnonzero(short)
        long_rows = np.flatnonzero(~short)
        if len(short_rows):
            legacy = self._short_keys_need_hashes(scope, self._epoch(now))
            mine = self.claim(scope + SHORT_SCOPE_SUFFIX, owner, raw, now)
            if legacy:
                hashed = identities_from_digests(sha256_digests(_take(texts, short_rows)))
                mine &= self.claim(scope, owner, hashed, now)
            keep[short_rows] = mine
        if len(long_rows):
            hashed = identities_from_digests(sha256_digests(_take(texts, long_rows)))
            keep[long_rows] = self.claim(scope, owner, hashed, now)
        return keep

    def _short_keys_need_hashes(self, scope: str, epoch: int) -> bool:
        """Whether short keys of ``scope`` must also be checked by hash (see claim_keys).

        The first claim of short keys in a scope records, once for all processes, the epoch
        and whether the scope's hashed mark sets of that epoch and the one before existed:
        marks older than that can no longer be read after the next epoch.
        """
        known = self._short_key_start.get(scope)
        if known is None:
            key = f"{self.namespace}:{{{scope}{SHORT_SCOPE_SUFFIX}}}:since"
            raw = self.client.get(key)
            if raw is None:
                sets = [
                    self._set_key(scope, partition, e)
                    for partition in range(self.partitions)
                    for e in (epoch, epoch - 1)
                ]
                found = any(int(n) for n in self._pipeline([("EXISTS", k) for k in sets]))
                self.client.set(key, f"{epoch}:{int(found)}", nx=True)
                raw = self.client.get(key)
            text = raw.decode() if isinstance(raw, bytes) else str(raw or "0:1")
            first, _, found_marks = text.partition(":")
            known = (int(first), found_marks == "1")
            self._short_key_start[scope] = known
        started, had_marks = known
        return had_marks and epoch <= started + 1

    def forget_key_owner(self, scope: str, owner: str) -> None:
        """:meth:`forget_owner` for an owner that claimed with :meth:`claim_keys`."""
        self.forget_owner(scope, owner)
        self.forget_owner(scope + SHORT_SCOPE_SUFFIX, owner)

    def _pipeline(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one round trip; errors come back in place of their reply."""
        if not commands:
            return []
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute(raise_on_error=False))

    def _claims(self, calls: list[tuple[Any, ...]]) -> list[bytes]:
        """Run the claim calls; if Redis lost the script (a restart), load it and run those
        calls again (a call that found no script did nothing)."""
        replies = self._pipeline(calls)
        missing = [
            i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)
        ]
        if missing:
            self.client.script_load(_CLAIM)
            for i, reply in zip(missing, self._pipeline([calls[i] for i in missing]), strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def forget_owner(self, scope: str, owner: str) -> None:
        """Drop an owner's claim record once its output is durably stored (saves memory)."""
        keys = [self._owner_key(scope, p, owner) for p in range(self.partitions)]
        self.client.unlink(*keys)

    def release_owner(self, scope: str, owner: str, now: float | None = None) -> int:
        """Take back every identity ``owner`` claimed, and its claim record: for a batch whose
        write failed, so that nothing of it is stored. Its rows may then come back grouped
        differently (a webhook drain's re-read) under another owner, which must not find
        them claimed. Returns how many identities were released."""
        epoch = self._epoch(now)
        released = 0
        for partition in range(self.partitions):
            keys = (
                self._set_key(scope, partition, epoch),
                self._set_key(scope, partition, epoch - 1),
                self._owner_key(scope, partition, owner),
            )
            released += int(self._release(keys=keys))
        return released
