"""A stored webhook event's contentHash is always the SHA-256 of its canonical JSON."""

from __future__ import annotations

import json

from ingest.hashing import canonical_json, sha256_hex
from ingest.webhooks.storage import _event_of

EVENT = {"b": [1, 2], "a": "zé"}
CANONICAL = canonical_json(EVENT)
HASH = sha256_hex(CANONICAL)


def test_canonical_text_with_its_hash_is_taken_as_sent() -> None:
    assert _event_of({"eventJson": CANONICAL.decode(), "contentHash": HASH}) == (EVENT, HASH)


def test_a_wrong_hash_is_replaced_by_the_canonical_one() -> None:
    entry = {"eventJson": CANONICAL.decode(), "contentHash": "0" * 64}
    assert _event_of(entry) == (EVENT, HASH)


def test_non_canonical_text_is_canonicalised_before_hashing() -> None:
    loose = json.dumps(EVENT, indent=2)  # another key order and white space
    assert _event_of({"eventJson": loose, "contentHash": HASH}) == (EVENT, HASH)
    assert _event_of({"eventJson": loose}) == (EVENT, HASH)


def test_an_event_object_is_hashed_canonically() -> None:
    assert _event_of({"event": {"a": "zé", "b": [1, 2]}}) == (EVENT, HASH)
