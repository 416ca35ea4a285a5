"""The vectorised paths of the S3 import agree with the plain, per-row definitions."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.dedup import (
    first_occurrences,
    identities_from_digests,
    identities_from_hex,
    identities_from_hex_column,
    short_key_identities,
)
from ingest.hashing import digests_from_hex_text, sha256_digests
from ingest.provenance import ProvenanceBuilder, constant_text_column
from ingest.s3csv import digests
from ingest.sinks.file import write_parquet


def test_sha256_digests_match_hashlib() -> None:
    values = ["", "a", "é", "x" * 1000]
    got = sha256_digests(pa.array(values))
    assert [bytes(d) for d in got] == [hashlib.sha256(v.encode()).digest() for v in values]
    assert sha256_digests(pa.array([], pa.string())).shape == (0, 32)


def test_sha256_digests_refuse_nulls() -> None:
    with pytest.raises(ValueError):
        sha256_digests(pa.array(["a", None]))


def test_hex_column_identities_match_the_per_row_ones() -> None:
    hexes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(50)]
    column = pa.chunked_array([pa.array(hexes[:20]), pa.array(hexes[20:])])
    assert identities_from_hex_column(column).tolist() == identities_from_hex(hexes).tolist()
    raw = digests_from_hex_text(column)
    assert identities_from_digests(raw).tolist() == identities_from_hex(hexes).tolist()


def test_hex_column_must_hold_64_digits_each() -> None:
    with pytest.raises(ValueError):
        digests_from_hex_text(pa.array(["ab" * 31, "ab" * 33]))


@pytest.mark.parametrize("repeats", [0, 1, 500])
def test_first_occurrences_match_numpy_unique(repeats: int) -> None:
    rng = np.random.default_rng(repeats)
    ids = np.frombuffer(rng.bytes(16 * 2000), dtype="S16").copy()
    ids[rng.integers(0, 2000, repeats)] = ids[rng.integers(0, 2000, repeats)]
    # Same first 8 bytes, different last 8: a prefix clash is not a repeat.
    ids[10] = ids[11][:8] + b"\x01" * 8
    _, expected = np.unique(ids, return_index=True)
    assert first_occurrences(ids).tolist() == sorted(expected.tolist())


def test_first_occurrences_of_ids_sharing_a_prefix_or_a_mixed_head() -> None:
    """Short keys' identities share their first 8 bytes; two ids can share the 64-bit mix
    the function sorts on. Neither is a repeat: only equal ids are."""
    _, short = short_key_identities(pa.array([f"e-{n:08d}" for n in range(3000)] * 2))
    assert first_occurrences(short).tolist() == list(range(3000))
    k = 0x9E3779B97F4A7C15
    w0a, w1a, w1b = 0x0123456789ABCDEF, 0x1111, 0x2222
    w0b = w0a ^ ((w1a * k) % 2**64) ^ ((w1b * k) % 2**64)  # the same mix, other bytes
    pair = np.array([[w0a, w1a], [w0b, w1b], [w0a, w1a]], dtype=np.uint64).view("S16")
    assert first_occurrences(pair.reshape(-1)).tolist() == [0, 1]


def test_common_columns_hold_the_common_values() -> None:
    builder = ProvenanceBuilder(
        source_id="b/k",
        source_type="S3",
        source_uri="s3://b/k",
        purpose="p",
        ingested_by="w",
        transformations=("schema:x@1", "mapping:a->b"),
    )
    columns = builder.common_columns(3)
    table = pa.table(columns)
    assert table.to_pylist() == [builder.common()] * 3
    assert pa.table(builder.common_columns(0)).num_rows == 0


def test_constant_text_columns_survive_parquet() -> None:
    table = pa.table(
        {
            "provenance": pa.StructArray.from_arrays(
                [constant_text_column("s3://b/k", 4), constant_text_column(None, 4)],
                ["sourceUri", "classification"],
            ),
            "n": pa.array([1, 2, 3, 4]),
        }
    )
    buffer = io.BytesIO()
    write_parquet(table, buffer)
    buffer.seek(0)
    back = pq.read_table(buffer)
    assert back.to_pylist() == table.to_pylist()
    assert back.column("provenance")[0].as_py() == {"sourceUri": "s3://b/k", "classification": None}


def test_hex_record_digests_match_the_raw_ones() -> None:
    data = b'a,b\n"x\ny",z\n\nlast'
    starts = np.array([0, 4, 13], dtype=np.int64)
    ends = np.array([3, 12, 17], dtype=np.int64)
    newlines = np.array([3, 7, 12, 13], dtype=np.int64)
    text = digests.record_hex_digests(data, starts, ends, newlines)
    assert text.type == pa.string()
    expected = [hashlib.sha256(data[s:e]).hexdigest() for s, e in zip(starts, ends, strict=True)]
    assert text.to_pylist() == expected
    raw = digests.record_digests(data, starts, ends, newlines)
    assert digests.hex_digests(raw).to_pylist() == expected


@pytest.mark.parametrize(
    "block",
    [b'a,"b"\n', b'a,"b""c"\n"x\ny",z\n', b'a,5" pipe\n', b'"open,x\n', b"plain,row\n"],
)
def test_quote_check_with_known_positions_matches_the_search(block: bytes) -> None:
    from ingest.s3csv.arrow_csv import quotes_follow_rfc4180
    from ingest.s3csv.ranges import CsvDialect, scan_newlines

    dialect = CsvDialect(",", '"', "utf-8", True)
    quotes = scan_newlines(block, dialect.quote_byte, keep_quotes=True).quotes
    assert quotes is not None
    assert quotes_follow_rfc4180(block, dialect, quotes) == quotes_follow_rfc4180(block, dialect)
