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
from typing import Any

import numpy as np
import redis

__all__ = ["IDENTITY_BYTES", "DedupIndex", "identities_from_hex", "key_field_identities"]

IDENTITY_BYTES = 16
# Lua's unpack() has a fixed stack limit; 4000 members a call stays well inside it.
CHUNK = 4000

_CLAIM = """
local blob = ARGV[1]
local ttl = tonumber(ARGV[2])
local n = #blob / 16
local members = {}
for i = 0, n - 1 do members[i + 1] = string.sub(blob, i * 16 + 1, i * 16 + 16) end
local seen = redis.call('SMISMEMBER', KEYS[1], unpack(members))
local older = redis.call('SMISMEMBER', KEYS[2], unpack(members))
local new, bits = {}, {}
for i = 1, n do
  if seen[i] == 1 or older[i] == 1 then
    bits[i] = '0'
  else
    bits[i] = '1'
    new[#new + 1] = members[i]
  end
end
if #new > 0 then
  redis.call('SADD', KEYS[1], unpack(new))
  redis.call('EXPIRE', KEYS[1], ttl * 2 + 3600)
  redis.call('APPEND', KEYS[3], table.concat(new))
  redis.call('EXPIRE', KEYS[3], ttl * 2 + 3600)
end
return table.concat(bits)
"""


def identities_from_hex(hex_hashes: Sequence[str]) -> np.ndarray:
    """Identities (``S16``) from hex SHA-256 strings such as contentHash values."""
    joined = "".join(h[: IDENTITY_BYTES * 2] for h in hex_hashes)
    return np.frombuffer(bytes.fromhex(joined), dtype=f"S{IDENTITY_BYTES}").copy()


def key_field_identities(frame: Any, fields: Sequence[str]) -> np.ndarray:
    """Identities (``S16``) of a frame's rows by their key-field values, computed column-wise.

    A row's identity is the SHA-256 of its key-field values as text joined by U+001F (a null
    is U+0000; a time is its integer nanoseconds, which is exact and cheap to render).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    texts = []
    for name in fields:
        column = pa.array(frame[name], from_pandas=True)
        if pa.types.is_timestamp(column.type):  # the same instant in any unit: nanoseconds
            column = column.cast(pa.timestamp("ns", tz=column.type.tz))
        if pa.types.is_temporal(column.type):
            column = column.cast(pa.int64())
        texts.append(pc.cast(column, pa.string()))
    joined = pc.binary_join_element_wise(
        *texts, "\x1f", null_handling="replace", null_replacement="\x00"
    )
    return identities_from_hex(_sha256_hex_column(joined))


def _sha256_hex_column(values: Any) -> list[str]:
    try:
        import polars as pl
        import polars_hash as plh
    except ImportError:  # the hashlib loop gives the same digests, slower
        return [hashlib.sha256(v.encode()).hexdigest() for v in values.to_pylist()]
    series = pl.Series("k", values)
    hexes = series.to_frame().select(plh.col("k").chash.sha2_256()).to_series()
    return hexes.to_list()


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
        self._claim = client.register_script(_CLAIM)

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
        _, first = np.unique(ids, return_index=True)
        first.sort()
        epoch = int((time.time() if now is None else now) // self.ttl)
        parts = np.frombuffer(ids.tobytes(), dtype=np.uint8)[::IDENTITY_BYTES] % self.partitions
        for partition in np.unique(parts[first]):
            positions = first[parts[first] == partition]
            keep[positions] = self._claim_partition(
                scope, int(partition), owner, ids[positions], epoch
            )
        return keep

    def _claim_partition(
        self, scope: str, partition: int, owner: str, ids: np.ndarray, epoch: int
    ) -> np.ndarray:
        owner_key = self._owner_key(scope, partition, owner)
        mine = self.client.get(owner_key)
        keep = np.zeros(len(ids), dtype=bool)
        if mine:
            owned = np.frombuffer(mine, dtype=f"S{IDENTITY_BYTES}")
            keep = np.isin(ids, owned)
        todo = np.flatnonzero(~keep)
        keys = [
            self._set_key(scope, partition, epoch),
            self._set_key(scope, partition, epoch - 1),
            owner_key,
        ]
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            bits = self._claim(keys=keys, args=[ids[chunk].tobytes(), self.ttl])
            keep[chunk] = np.frombuffer(bits, dtype=np.uint8) == ord("1")
        return keep

    def forget_owner(self, scope: str, owner: str) -> None:
        """Drop an owner's claim record once its output is durably stored (saves memory)."""
        keys = [self._owner_key(scope, p, owner) for p in range(self.partitions)]
        self.client.unlink(*keys)
