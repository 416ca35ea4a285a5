"""record_digests: the compiled hash, the polars-hash path and the hashlib fallback agree
with hashlib."""

from __future__ import annotations

import hashlib
import importlib.util
import random
import sys
from types import ModuleType

import numpy as np
import pytest

from ingest import hashing
from ingest.hashing import sha256_hex
from ingest.s3csv import digests
from ingest.s3csv.ranges import CsvDialect
from ingest.s3csv.records import _layout

fast_only = pytest.mark.skipif(not digests.FAST_PATH, reason="polars-hash is not installed")


def expected(data: bytes, starts: np.ndarray, ends: np.ndarray) -> list[bytes]:
    return [hashlib.sha256(data[s:e]).digest() for s, e in zip(starts, ends, strict=True)]


def spans(records: list[bytes], eols: list[bytes]) -> tuple[bytes, np.ndarray, np.ndarray]:
    """Join records with the given terminators; return the data and each record's span."""
    data, starts, ends = bytearray(), [], []
    for record, eol in zip(records, eols, strict=True):
        starts.append(len(data))
        data += record
        ends.append(len(data))
        data += eol
    return bytes(data), np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)


def newlines(data: bytes) -> np.ndarray:
    return np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 0x0A)


def both(data: bytes, starts: np.ndarray, ends: np.ndarray, mp: pytest.MonkeyPatch) -> np.ndarray:
    """The digests by the default path, checked against each fallback and hashlib; the hex
    form of each path against the digests."""
    lines = newlines(data)
    result = digests.record_digests(data, starts, ends, lines)
    hexes = [digests.record_hex_digests(data, starts, ends, lines)]
    others = []
    with mp.context() as patched:
        patched.setattr(hashing, "_native", None)  # as if ingest._speedups were not built
        others.append(digests.record_digests(data, starts, ends, lines))
        hexes.append(digests.record_hex_digests(data, starts, ends, lines))
        patched.setattr(digests, "FAST_PATH", False)  # and polars-hash not installed
        others.append(digests.record_digests(data, starts, ends, lines))
        hexes.append(digests.record_hex_digests(data, starts, ends, lines))
    assert [bytes(row) for row in result] == expected(data, starts, ends)
    for other in others:
        assert other.dtype == result.dtype == np.uint8
        assert other.shape == result.shape == (len(starts), digests.DIGEST_SIZE)
        assert np.array_equal(result, other)
    for text in hexes:
        assert text.type == "string"
        assert text.to_pylist() == [bytes(row).hex() for row in result]
    return result


def random_record(rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return b""
    if kind == 1:  # quoted field holding CR, LF and CRLF
        return b'1,"a\r\nb\nc\rd",' + rng.randbytes(rng.randrange(5)).replace(b"\n", b"")
    if kind == 2:  # bytes that are not UTF-8
        return b"\xff\xfe\x80," + bytes(rng.randrange(128, 256) for _ in range(rng.randrange(40)))
    return rng.randbytes(rng.randrange(300))


@fast_only
def test_the_fast_path_is_the_default() -> None:
    assert digests.FAST_PATH


@pytest.mark.parametrize("seed", range(3))
def test_random_records_match_hashlib(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    records = [random_record(rng) for _ in range(400)]
    eols = [rng.choice([b"\n", b"\r\n", b"\n\n", b"\r\n\r\n\n", b""]) for _ in records]
    data, starts, ends = spans(records, eols)
    both(data, starts, ends, monkeypatch)


def test_empty_records_and_empty_data(monkeypatch: pytest.MonkeyPatch) -> None:
    empty = hashlib.sha256(b"").digest()
    result = both(b"", np.array([0]), np.array([0]), monkeypatch)
    assert bytes(result[0]) == empty
    data, starts, ends = spans([b"", b"a", b"", b""], [b"\n", b"\r\n", b"\n", b""])
    assert [bytes(r) for r in both(data, starts, ends, monkeypatch)][::2] == [empty, empty]


def test_no_records() -> None:
    result = digests.record_digests(
        b"a\n", np.array([], dtype=np.int64), np.array([]), np.array([1])
    )
    assert result.shape == (0, digests.DIGEST_SIZE)


def test_a_record_of_a_megabyte(monkeypatch: pytest.MonkeyPatch) -> None:
    big = random.Random(7).randbytes(1 << 20)
    data, starts, ends = spans([b"x", big, b"y"], [b"\n", b"\r\n", b"\n"])
    both(data, starts, ends, monkeypatch)


def test_records_of_a_parsed_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The spans parse_records really passes: quoted newlines, bare CRs, blank lines, no EOL."""
    data = b'1,"x\r\ny"\r\n\r\n2,\xff\xfe\r3,"\n"\n\n4,z'
    layout = _layout(data, CsvDialect())
    result = both(data, layout.starts, layout.ends, monkeypatch)
    assert digests.hex_digests(result).to_pylist()[0] == sha256_hex(b'1,"x\r\ny"')


@fast_only
def test_spans_out_of_order_fall_back_to_hashlib() -> None:
    """One offsets buffer needs spans in order; others are left to hashlib, slice by slice."""
    data = b"abc\ndef\n"
    starts, ends = np.array([4, 0, 1]), np.array([7, 3, 3])  # unsorted and overlapping
    assert digests._polars_digests(data, starts, ends) is None
    result = digests.record_digests(data, starts, ends, np.array([], dtype=np.int64))
    assert [bytes(row) for row in result] == expected(data, starts, ends)


def test_without_polars_hash_the_module_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Import a second copy of the module as if polars-hash were not installed."""
    monkeypatch.setitem(sys.modules, "polars_hash", None)  # makes `import polars_hash` fail
    spec = importlib.util.spec_from_file_location("_digests_without_polars", digests.__file__)
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.FAST_PATH is False
    data, starts, ends = spans([b"a,b", b"", b'"c\nd"'], [b"\r\n", b"\n", b"\n"])
    result = module.record_digests(data, starts, ends, newlines(data))
    assert [bytes(row) for row in result] == expected(data, starts, ends)
