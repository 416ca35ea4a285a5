"""Would compact dedup marks pay? Bytes and Redis CPU per identity, sets against hash buckets.

Today a dedup mark is a 16-byte member of a large Redis set (hashtable encoding, ~66-70
bytes a member measured). The alternative measured here keeps marks in many small hashes,
``2**bits`` buckets chosen by the identity's first bytes, field = the other 14 bytes: small
hashes stay in Redis's listpack encoding (<= ``hash-max-listpack-entries``, 128 by default),
about 20 bytes a mark. A claim must then ask each identity's bucket (``HSETNX``), one command
per identity inside the script, where a set takes a whole chunk in one ``SMISMEMBER`` and one
``SADD``. This prototype claims the same random identities both ways, on a private Redis, and
prints ``used_memory`` per identity and the Redis server's CPU per identity (from ``/proc``).
It only measures the current epoch (the prototype's best case: no look-up in the previous
epoch). Example::

    .venv/bin/python loadtests/dedup_compact.py --ids 2000000 --bits 16
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack import RedisServer, cpu_seconds  # noqa: E402
from ingest.dedup import DedupIndex  # noqa: E402

__all__ = ["main"]

# KEYS: bucket keys; ARGV[1]: per key, its identities' 14-byte fields back to back, in KEYS
# order; ARGV[2]: the count per key as 16-bit big-endian; ARGV[3]: TTL. Returns '1'/'0' each.
_CLAIM_BUCKETS = """
local fields, counts, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local bits, pos = {}, 1
for k = 1, #KEYS do
  local n = string.byte(counts, 2 * k - 1) * 256 + string.byte(counts, 2 * k)
  local added = false
  for _ = 1, n do
    local field = string.sub(fields, pos, pos + 13)
    pos = pos + 14
    if redis.call('HSETNX', KEYS[k], field, '') == 1 then
      bits[#bits + 1] = '1'
      added = true
    else
      bits[#bits + 1] = '0'
    end
  end
  if added then redis.call('EXPIRE', KEYS[k], ttl) end
end
return table.concat(bits)
"""


# The same with integer members: sets of up to ``set-max-intset-entries`` (512) integers stay
# intsets, 8 bytes a member. KEYS: bucket keys; ARGV[1]: counts per key (16-bit big-endian);
# ARGV[2]: TTL; ARGV[3...]: members as decimal int64 text, grouped by key in KEYS order.
_CLAIM_INTSETS = """
local counts, ttl = ARGV[1], tonumber(ARGV[2])
local bits, pos = {}, 3
for k = 1, #KEYS do
  local n = string.byte(counts, 2 * k - 1) * 256 + string.byte(counts, 2 * k)
  local members = {unpack(ARGV, pos, pos + n - 1)}
  pos = pos + n
  local seen = redis.call('SMISMEMBER', KEYS[k], unpack(members))
  local new = {}
  for i = 1, n do
    if seen[i] == 1 then bits[#bits + 1] = '0' else
      bits[#bits + 1] = '1'
      new[#new + 1] = members[i]
    end
  end
  if #new > 0 then
    redis.call('SADD', KEYS[k], unpack(new))
    redis.call('EXPIRE', KEYS[k], ttl)
  end
end
return table.concat(bits)
"""


def intsets(client: redis.Redis, pid: int, ids: np.ndarray, bits: int) -> dict[str, Any]:
    """Identities cut to 80 bits: a bucket from the first ``bits`` bits, an int64 member
    from the next 8 bytes (collisions: about n**2 / 2**81, 4e-7 at a billion identities)."""
    script = client.register_script(_CLAIM_INTSETS)
    raw = np.ascontiguousarray(ids).view(np.uint8).reshape(-1, 16)
    bucket = (raw[:, 0].astype(np.int64) << 8 | raw[:, 1]) >> (16 - bits)
    member = np.ascontiguousarray(raw[:, 2:10]).view(">i8").reshape(-1)
    before, cpu = _used(client), cpu_seconds(pid)
    for start in range(0, len(ids), 278_000):  # one benchmark range's identities a call
        part = slice(start, start + 278_000)
        order = np.argsort(bucket[part], kind="stable")
        chosen, counts = np.unique(bucket[part][order], return_counts=True)
        keys = [f"ingest:dd:{{bench}}:i{b}" for b in chosen.tolist()]
        members = member[part][order].astype(str).tolist()
        script(keys=keys, args=[counts.astype(">u2").tobytes(), 30 * 86400, *members])
    return _figures(client, pid, len(ids), before, cpu)


def _used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def sets(client: redis.Redis, pid: int, ids: np.ndarray) -> dict[str, Any]:
    index = DedupIndex(client, ttl_seconds=30 * 86400, partitions=16)
    before, cpu = _used(client), cpu_seconds(pid)
    for start in range(0, len(ids), 278_000):  # one benchmark range's identities a claim
        owner = f"range-{start}"
        index.claim("bench", owner, ids[start : start + 278_000])
        index.forget_owner("bench", owner)
    return _figures(client, pid, len(ids), before, cpu)


def buckets(client: redis.Redis, pid: int, ids: np.ndarray, bits: int) -> dict[str, Any]:
    script = client.register_script(_CLAIM_BUCKETS)
    raw = np.ascontiguousarray(ids).view(np.uint8).reshape(-1, 16)
    bucket = (raw[:, 0].astype(np.int64) << 8 | raw[:, 1]) >> (16 - bits)
    before, cpu = _used(client), cpu_seconds(pid)
    for start in range(0, len(ids), 4000):
        part = slice(start, start + 4000)
        order = np.argsort(bucket[part], kind="stable")
        chosen, counts = np.unique(bucket[part][order], return_counts=True)
        keys = [f"ingest:dd:{{bench}}:b{b}" for b in chosen.tolist()]
        fields = raw[part][order][:, 2:].tobytes()
        script(keys=keys, args=[fields, counts.astype(">u2").tobytes(), 30 * 86400])
    return _figures(client, pid, len(ids), before, cpu)


def _figures(client: redis.Redis, pid: int, n: int, before: int, cpu: float) -> dict[str, Any]:
    return {
        "identities": n,
        "bytesPerIdentity": round((_used(client) - before) / n, 1),
        "redisCpuMicrosecondsPerIdentity": round((cpu_seconds(pid) - cpu) * 1e6 / n, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=1_000_000)
    parser.add_argument("--bits", type=int, default=16, help="2**bits hash buckets")
    parser.add_argument("--intset-bits", type=int, default=13, help="2**bits intset buckets")
    args = parser.parse_args(argv)
    ids = np.frombuffer(np.random.default_rng(0).bytes(16 * args.ids), dtype="S16")
    work = Path(tempfile.mkdtemp(prefix="dedup-compact-"))
    server = RedisServer(work / "redis").start()
    try:
        client = redis.Redis.from_url(server.url)
        result = {"sets (today)": sets(client, server.pid, ids)}
        client.flushall()
        result[f"hash buckets (2**{args.bits})"] = buckets(client, server.pid, ids, args.bits)
        encodings = {
            client.object("encoding", key).decode()
            for key in client.scan_iter(match="ingest:dd:{bench}:b*", count=1000)
        }
        result["bucketEncodings"] = sorted(encodings)
        client.flushall()
        result[f"intset buckets (2**{args.intset_bits})"] = intsets(
            client, server.pid, ids, args.intset_bits
        )
        result["intsetEncodings"] = sorted(
            {
                client.object("encoding", key).decode()
                for key in client.scan_iter(match="ingest:dd:{bench}:i*", count=1000)
            }
        )
        print(json.dumps(result, indent=2))
        return 0
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
