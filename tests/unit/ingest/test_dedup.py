"""Key-field identities: the same values give the same identity, different values another."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow as pa

from ingest.dedup import (
    identities_from_hex,
    key_field_identities,
    key_texts,
    short_key_identities,
)


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": pd.Series(["a", "b", "a", "a", None], dtype="string[pyarrow]"),
            "timestamp": pd.to_datetime(
                [
                    "2026-01-01T00:00:00Z",
                    "2026-01-01T00:00:00Z",
                    "2026-01-01T00:00:00Z",
                    "2026-01-02T00:00:00Z",
                    "2026-01-01T00:00:00Z",
                ],
                utc=True,
            ),
            "score": [0.5, 0.5, 0.9, 0.5, 0.5],
        }
    )


def test_same_key_values_same_identity_whatever_the_other_columns() -> None:
    ids = key_field_identities(frame(), ["id", "timestamp"])
    assert ids[0] == ids[2]  # same id and time, different score
    assert len({ids[0], ids[1], ids[3], ids[4]}) == 4


def test_identity_is_the_documented_hash() -> None:
    ids = key_field_identities(frame(), ["id", "timestamp"])
    nanos = pd.Timestamp("2026-01-01T00:00:00Z").value
    expected = hashlib.sha256(f"a\x1f{nanos}".encode()).hexdigest()
    assert ids[0] == identities_from_hex([expected])[0]
    null_row = hashlib.sha256(f"\x00\x1f{nanos}".encode()).hexdigest()
    assert ids[4] == identities_from_hex([null_row])[0]


def test_single_key_field() -> None:
    ids = key_field_identities(frame(), ["id"])
    assert ids[0] == ids[2] == ids[3] and ids[0] != ids[1]


def test_single_key_field_identity_is_the_hash_of_its_text() -> None:
    # One column without nulls is hashed as it is; with a null, the null is U+0000.
    complete = pd.DataFrame({"id": pd.Series(["a", "b"], dtype="string[pyarrow]")})
    ids = key_field_identities(complete, ["id"])
    assert list(ids) == list(
        identities_from_hex([hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"b").hexdigest()])
    )
    with_null = key_field_identities(frame(), ["id"])
    assert with_null[0] == ids[0]
    assert with_null[4] == identities_from_hex([hashlib.sha256(b"\x00").hexdigest()])[0]


def test_short_keys_are_their_own_identity_and_longer_ones_are_left_out() -> None:
    texts = pa.array(
        ["", "a", "a\x00", "ab", "é" * 7, "x" * 14, "y" * 15, "z" * 64, "ab"], pa.string()
    )
    short, ids = short_key_identities(texts)
    # "é" is 2 bytes in UTF-8: 7 of them are 14 bytes and still short.
    assert short.tolist() == [True, True, True, True, True, True, False, False, True]
    assert len(ids) == short.sum() == 7
    raw = [bytes(i).ljust(16, b"\0") for i in ids]  # numpy drops trailing zero bytes
    keys = [t.encode() for t, s in zip(texts.to_pylist(), short, strict=True) if s]
    for identity, key in zip(raw, keys, strict=True):
        assert identity[1] == len(key) and identity[2 : 2 + len(key)] == key
        assert identity[2 + len(key) :] == b"\0" * (14 - len(key))
    # Distinct texts, distinct identities ("a" and "a\x00" differ by their length byte); the
    # same text, the same identity.
    assert len(set(raw[:6])) == 6 and raw[3] == raw[6]


def test_short_key_identities_spread_over_partitions_and_read_sliced_arrays() -> None:
    keys = [f"k{n}" for n in range(4096)]
    short, ids = short_key_identities(pa.array(keys).slice(96))
    assert short.all() and len(ids) == 4000
    leading = np.frombuffer(b"".join(bytes(i).ljust(16, b"\0") for i in ids), np.uint8)[::16]
    counts = np.bincount(leading % 16, minlength=16)
    assert counts.min() > 4000 / 16 / 2  # no partition starved, none holding most
    large = pa.array(keys[:10], pa.large_string())
    assert (
        short_key_identities(large)[1].tolist()
        == short_key_identities(pa.array(keys[:10]))[1].tolist()
    )


def test_key_texts_join_fields_and_mark_nulls() -> None:
    texts = key_texts(frame(), ["id", "timestamp"])
    assert texts.type == pa.string() and len(texts) == len(frame())
    assert "\x1f" in texts[0].as_py()
