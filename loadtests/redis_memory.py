"""Redis memory per idempotency key and per dedup mark, measured on a private Redis.

Writes N keys the way the web process remembers an accepted event's key (the value the
accept script sets: the content mark alone, as ``complete_many`` with an empty result
stores) and N dedup marks the way a range or webhook batch does (``DedupIndex.claim``), and
reports ``INFO memory`` ``used_memory`` deltas per key and ``MEMORY USAGE`` of a few sample
keys. Example::

    .venv/bin/python loadtests/redis_memory.py --keys 100000

The figures feed the capacity model of docs/performance.md (bytes per million records).
"""

from __future__ import annotations

import argparse
import hashlib
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

from devstack import RedisServer  # noqa: E402
from ingest.dedup import DedupIndex  # noqa: E402
from ingest.webhooks.idempotency import IdempotencyStore  # noqa: E402

__all__ = ["main"]

CHUNK = 1000  # keys per call: the size of a large webhook batch


def _used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def idempotency_bytes(client: redis.Redis, n: int) -> dict[str, Any]:
    """Bytes per completed idempotency key (the state a key spends its TTL in)."""
    store = IdempotencyStore(client, ttl_seconds=86400)
    before = _used(client)
    for start in range(0, n, CHUNK):
        items = []
        for i in range(start, min(n, start + CHUNK)):
            key = f"msg_{i:012d}_k6load"  # a webhook-id of typical length
            items.append((key, hashlib.sha256(key.encode()).hexdigest()))
        store.begin_many("load", items)
        store.complete_many("load", [(k, h, {}) for k, h in items])
    after = _used(client)
    samples = [
        int(client.memory_usage(store.redis_key("load", f"msg_{i:012d}_k6load")) or 0)
        for i in (0, n // 2, n - 1)
    ]
    return {
        "keys": n,
        "usedMemoryDeltaBytes": after - before,
        "bytesPerKey": round((after - before) / n, 1),
        "memoryUsageSamples": samples,
    }


def dedup_bytes(client: redis.Redis, n: int, partitions: int) -> dict[str, Any]:
    """Bytes per dedup mark (16-byte identities in per-epoch sets), owner records forgotten."""
    index = DedupIndex(client, ttl_seconds=30 * 86400, partitions=partitions)
    rng = np.random.default_rng(0)
    before = _used(client)
    for start in range(0, n, 4000):
        count = min(4000, n - start)
        ids = np.frombuffer(rng.bytes(16 * count), dtype="S16")
        owner = f"batch-{start}"
        index.claim("memtest", owner, ids)
        index.forget_owner("memtest", owner)  # as a finished range or batch does
    after = _used(client)
    return {
        "marks": n,
        "partitions": partitions,
        "usedMemoryDeltaBytes": after - before,
        "bytesPerMark": round((after - before) / n, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="redis-memory-"))
    server = RedisServer(work / "redis").start()
    try:
        client = redis.Redis.from_url(server.url)
        result = {
            "redis": client.info("server")["redis_version"],
            "idempotency": idempotency_bytes(client, args.keys),
            "dedupWebhooks": dedup_bytes(client, args.keys, partitions=4),
            "dedupImports": dedup_bytes(client, args.keys, partitions=16),
        }
        print(json.dumps(result, indent=2))
        return 0
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
