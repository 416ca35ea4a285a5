"""Key-field identities: the same values give the same identity, different values another."""

from __future__ import annotations

import hashlib

import pandas as pd

from ingest.dedup import identities_from_hex, key_field_identities


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
