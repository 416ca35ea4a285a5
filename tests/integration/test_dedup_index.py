"""DedupIndex against a real Redis: first sightings, owners' re-runs, epochs, a lost script."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import redis

from ingest.dedup import CHUNK, DedupIndex, identities_from_digests, identities_from_hex
from ingest.hashing import sha256_digests

TTL = 3600


def ids(*names: str) -> np.ndarray:
    return identities_from_hex([hashlib.sha256(n.encode()).hexdigest() for n in names])


def test_first_sightings_are_claimed_and_later_ones_are_duplicates(
    redis_client: redis.Redis,
) -> None:
    index = DedupIndex(redis_client, TTL, partitions=4)
    first = index.claim("acme", "batch-1", ids("a", "b", "a", "c"), now=0)
    # A repeat inside one call is kept at its first position only.
    assert first.tolist() == [True, True, False, True]
    second = index.claim("acme", "batch-2", ids("c", "d", "b"), now=0)
    assert second.tolist() == [False, True, False]
    # Another scope does not share marks.
    assert index.claim("other", "batch-3", ids("a"), now=0).tolist() == [True]


def test_an_owner_running_again_keeps_what_it_claimed_and_no_one_else_does(
    redis_client: redis.Redis,
) -> None:
    index = DedupIndex(redis_client, TTL, partitions=4)
    names = [f"row-{n}" for n in range(50)]  # spread over every partition
    assert index.claim("acme", "range-7", ids(*names[:30]), now=0).all()
    # The re-run after a crash sees the rows it claimed as its own, and claims the rest.
    again = index.claim("acme", "range-7", ids(*names), now=0)
    assert again.all()
    assert not index.claim("acme", "range-8", ids(*names), now=0).any()
    # Once its output is stored and its record forgotten, its rows are duplicates even to it.
    index.forget_owner("acme", "range-7")
    assert not index.claim("acme", "range-7", ids(*names), now=0).any()


def test_a_mark_lasts_at_least_one_ttl_and_at_most_two(redis_client: redis.Redis) -> None:
    index = DedupIndex(redis_client, TTL, partitions=2)
    index.claim("acme", "b1", ids("x"), now=0)  # epoch 0
    assert not index.claim("acme", "b2", ids("x"), now=TTL).any()  # epoch 1: still seen
    assert index.claim("acme", "b3", ids("x"), now=2 * TTL).all()  # epoch 2: forgotten


def test_claims_survive_redis_losing_its_scripts(redis_client: redis.Redis) -> None:
    index = DedupIndex(redis_client, TTL, partitions=4)
    assert index.claim("acme", "b1", ids("p", "q"), now=0).all()
    redis_client.script_flush()  # as after a restart without persistence of the script cache
    assert index.claim("acme", "b2", ids("q", "r"), now=0).tolist() == [False, True]


def test_large_claims_are_chunked_and_answered_row_for_row(redis_client: redis.Redis) -> None:
    index = DedupIndex(redis_client, TTL, partitions=3)
    names = [f"n{n}" for n in range(3 * CHUNK + 17)]
    seen_before = names[::7]
    index.claim("acme", "earlier", ids(*seen_before), now=0)
    mask = index.claim("acme", "big", ids(*names), now=0)
    expected = np.array([n not in set(seen_before) for n in names])
    assert np.array_equal(mask, expected)
    assert int(mask.sum()) == len(names) - len(seen_before)


def keys(*texts: str) -> pa.Array:
    return pa.array(texts, pa.string())


def hashed(texts: pa.Array) -> np.ndarray:
    """What a version before short-key identities claimed for every key."""
    return identities_from_digests(sha256_digests(texts))


def mark_sets(client: redis.Redis, scope: str) -> set[str]:
    return {k.decode() for k in client.scan_iter(f"ingest:dd:{{{scope}:*}}:e*")}


def test_claim_keys_short_and_long_keys_across_owners_and_re_runs(
    redis_client: redis.Redis,
) -> None:
    index = DedupIndex(redis_client, TTL, partitions=4)
    long_key = "k" * 40
    batch = keys("a1", long_key, "a1", "b2", "x" * 14, "y" * 15, long_key)
    first = index.claim_keys("acme", "range-1", batch, now=0)
    assert first.tolist() == [True, True, False, True, True, True, False]
    # A re-run of the same owner keeps what it claimed; another owner finds every key taken.
    assert index.claim_keys("acme", "range-1", batch, now=0).tolist() == first.tolist()
    assert not index.claim_keys("acme", "range-2", batch, now=0).any()
    # In another process (a fresh index) too; and new keys are new.
    other = DedupIndex(redis_client, TTL, partitions=4)
    assert other.claim_keys("acme", "range-3", keys("b2", "c3", "z" * 30), now=0).tolist() == [
        False,
        True,
        True,
    ]
    index.forget_key_owner("acme", "range-1")
    assert not list(redis_client.scan_iter("ingest:dd:*:own:range-1"))


def test_short_keys_are_marked_apart_from_hashes(redis_client: redis.Redis) -> None:
    """A short key's identity is its own text, so it must never share a set with hashes: a
    crafted key could otherwise equal another key's hash and drop that row."""
    index = DedupIndex(redis_client, TTL, partitions=4)
    assert index.claim_keys("fresh", "o", keys("a", "b", "c"), now=0).all()
    assert mark_sets(redis_client, "fresh#short")
    assert not mark_sets(redis_client, "fresh")  # no earlier marks: no hashes written either
    assert index.claim_keys("fresh", "o2", keys("d" * 20), now=0).all()
    assert mark_sets(redis_client, "fresh")


def test_short_keys_stored_before_the_upgrade_stay_duplicates(redis_client: redis.Redis) -> None:
    old = DedupIndex(redis_client, TTL, partitions=4)
    stored = keys("e-1", "e-2", "e-3")
    assert old.claim("legacy", "before", hashed(stored), now=10).all()  # the earlier version
    new = DedupIndex(redis_client, TTL, partitions=4)
    again = keys("e-1", "e-2", "e-3", "e-4")
    assert new.claim_keys("legacy", "after", again, now=20).tolist() == [False] * 3 + [True]
    # Still so in the next epoch, which still reads the first one; a new key stored now is
    # marked both ways, so that workers not yet upgraded see it too.
    later = DedupIndex(redis_client, TTL, partitions=4)
    assert later.claim_keys("legacy", "next", keys("e-2", "e-5"), now=TTL + 5).tolist() == [
        False,
        True,
    ]
    assert not old.claim("legacy", "old-worker", hashed(keys("e-5")), now=TTL + 6).any()
    # Two epochs on, no hash mark of before the upgrade can be read: short keys stop hashing.
    sets_before = mark_sets(redis_client, "legacy")
    assert later.claim_keys("legacy", "late", keys("e-6"), now=2 * TTL + 5).all()
    assert mark_sets(redis_client, "legacy") == sets_before
