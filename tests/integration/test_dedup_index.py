"""DedupIndex against a real Redis: first sightings, owners' re-runs, epochs, a lost script."""

from __future__ import annotations

import hashlib

import numpy as np
import redis

from ingest.dedup import CHUNK, DedupIndex, identities_from_hex

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
