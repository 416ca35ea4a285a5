"""Deduplication by record identity across batches, objects and re-runs, kept in Redis.

A record's identity is the first 16 bytes of its SHA-256 (its contentHash, or the hash of its
key fields). A batch *claims* identities: a claimed identity is stored by the batch that
claimed it, and every other batch counts it as a duplicate. Claims are remembered per owner
(the batch's deterministic identity), so a batch that runs again after a crash keeps the rows
it claimed the first time instead of dropping them as duplicates of itself: dedup marks can
never make a re-executed task lose rows.

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
]

IDENTITY_BYTES = 16
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


def key_field_identities(frame: Any, fields: Sequence[str]) -> np.ndarray:
    """Identities (``S16``) of rows by their key-field values, computed column-wise.

    ``frame`` is a pandas DataFrame or an Arrow table. A row's identity is the SHA-256 of
    its key-field values as text joined by U+001F (a null is U+0000; a time is its integer
    nanoseconds, which is exact and cheap to render).
    """
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
    return identities_from_digests(sha256_digests(joined))


def first_occurrences(ids: np.ndarray) -> np.ndarray:
    """Ascending positions of the first occurrence of each distinct identity in ``ids``.

    Sorting 16-byte strings is slow; their first 8 bytes sort as integers in a fraction of
    the time. Only rows whose first 8 bytes occur more than once (true repeats, or a rare
    prefix clash) are compared in full.
    """
    count = len(ids)
    head = np.ascontiguousarray(ids).view(np.uint64)[::2]
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
        self._release = client.register_script(_RELEASE)

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
        epoch = int((time.time() if now is None else now) // self.ttl)
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
        epoch = int((time.time() if now is None else now) // self.ttl)
        released = 0
        for partition in range(self.partitions):
            keys = (
                self._set_key(scope, partition, epoch),
                self._set_key(scope, partition, epoch - 1),
                self._owner_key(scope, partition, owner),
            )
            released += int(self._release(keys=keys))
        return released
