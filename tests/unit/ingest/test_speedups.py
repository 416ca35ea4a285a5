"""The compiled ``ingest._speedups``: its line scan gives what numpy's gives; both of its
SHA-256 block functions agree with hashlib, and ``sha256_digests`` gives the same digests
with it, with polars-hash and with hashlib."""

from __future__ import annotations

import hashlib
import random
import shutil
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from ingest import hashing
from ingest.hashing import native_span_digests, native_span_hex, sha256_digests
from ingest.s3csv import ranges
from ingest.s3csv.ranges import scan_newlines

native = pytest.importorskip("ingest._speedups", reason="ingest._speedups is not built here")
BACKENDS = [False, True] if native.BACKEND == "sha-ni" else [True]


def hashlib_digests(data: bytes, starts: Any, ends: Any) -> bytes:
    return b"".join(hashlib.sha256(data[s:e]).digest() for s, e in zip(starts, ends, strict=True))


def test_built_where_a_compiler_and_the_headers_are() -> None:
    """setup.py marks the extension optional; where it can be built, it must have been."""
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    if shutil.which("cc") is None or not headers.exists():
        pytest.skip("no C compiler or no Python headers here")
    assert hashing.NATIVE_BACKEND in {"sha-ni", "portable"}


@pytest.mark.parametrize("portable", BACKENDS)
def test_every_length_across_block_boundaries(portable: bool) -> None:
    """Lengths 0-300 cover one and two padding blocks and every tail size (55, 56, 63, 64...)."""
    data = random.Random(1).randbytes(400)
    starts = np.array([7] * 301, dtype=np.int64)
    ends = starts + np.arange(301, dtype=np.int64)
    raw, text = native.sha256_spans(data, starts, ends, True, True, portable)
    assert raw == hashlib_digests(data, starts, ends)
    assert text == raw.hex().encode()  # type: ignore[union-attr]


@pytest.mark.parametrize("portable", BACKENDS)
def test_random_spans_and_long_messages(portable: bool) -> None:
    rng = random.Random(2)
    data = rng.randbytes(1 << 17)
    starts = np.array([rng.randrange(len(data)) for _ in range(500)], dtype=np.int64)
    ends = np.minimum(starts + [rng.choice([0, 1, 64, 1000, 70_000]) for _ in starts], len(data))
    raw, text = native.sha256_spans(data, starts, ends, True, False, portable)
    assert raw == hashlib_digests(data, starts, ends) and text is None


def test_any_buffer_and_only_what_is_asked_for() -> None:
    data = b"hello,world\n"
    starts, ends = np.array([0, 6]), np.array([5, 11])
    want = hashlib_digests(data, starts, ends)
    for buffer in (data, bytearray(data), memoryview(data), pa.py_buffer(data)):
        assert native_span_digests(buffer, starts, ends).tobytes() == want  # type: ignore[union-attr]
    assert native.sha256_spans(
        data, starts.astype(np.int64), ends.astype(np.int64), False, False
    ) == (
        None,
        None,
    )
    text = native_span_hex(data, starts, ends)
    assert text is not None and text.type == pa.string()
    assert text.to_pylist() == [
        hashlib.sha256(b"hello").hexdigest(),
        hashlib.sha256(b"world").hexdigest(),
    ]


@pytest.mark.parametrize(
    ("starts", "ends"),
    [([0], [13]), ([-1], [2]), ([3], [2]), ([0, 0], [1])],
    ids=["past-the-end", "negative", "inverted", "unequal-lengths"],
)
def test_spans_outside_the_data_are_refused(starts: list[int], ends: list[int]) -> None:
    with pytest.raises(ValueError, match=r"span|one length"):
        native.sha256_spans(
            b"hello,world\n", np.array(starts, np.int64), np.array(ends, np.int64), True, True
        )


def test_offsets_that_are_not_int64_are_refused() -> None:
    with pytest.raises(ValueError, match="int64"):
        native.sha256_spans(b"abc", b"\x00" * 7, b"\x00" * 7, True, False)
    with pytest.raises(TypeError):
        native.sha256_spans("abc", b"", b"", True, False)  # type: ignore[arg-type]


def test_no_spans() -> None:
    empty = np.array([], dtype=np.int64)
    assert native.sha256_spans(b"", empty, empty, True, True) == (b"", b"")


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string(), pa.binary(), pa.large_binary()])
def test_sha256_digests_of_every_column_kind(
    kind: pa.DataType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sliced and chunked columns too; the same digests without the extension."""
    values = ["", "a", "é" * 40, "x" * 64, "key\x00with\x1fbytes", "y" * 1000]
    column = pa.array(values * 3, type=kind)
    if kind in (pa.binary(), pa.large_binary()):
        column = pa.array([v.encode() for v in values * 3], type=kind)
    sliced = column.slice(2, 10)
    chunked = pa.chunked_array([column.slice(0, 5), column.slice(5)])
    want = [hashlib.sha256(v.encode()).digest() for v in values * 3]
    assert [bytes(row) for row in sha256_digests(sliced)] == want[2:12]
    assert [bytes(row) for row in sha256_digests(chunked)] == want
    with_native = sha256_digests(column)
    monkeypatch.setattr(hashing, "_native", None)
    assert np.array_equal(sha256_digests(column), with_native)


def scans_agree(data: bytes, quote: int, parity: int, monkeypatch: pytest.MonkeyPatch) -> None:
    for keep in (False, True):
        got = scan_newlines(data, quote, parity, keep_quotes=keep)
        with monkeypatch.context() as patched:
            patched.setattr(ranges, "_speedups", None)  # numpy, block by block
            patched.setattr(ranges, "SCAN_BLOCK", 64)  # blocks that split quoted fields
            want = scan_newlines(data, quote, parity, keep_quotes=keep)
        assert got.parity == want.parity
        assert got.newlines.dtype == got.record_ends.dtype == np.int64
        assert got.newlines.tolist() == want.newlines.tolist()
        assert got.record_ends.tolist() == want.record_ends.tolist()
        if keep:
            assert got.quotes is not None and want.quotes is not None
            assert got.quotes.tolist() == want.quotes.tolist()
        else:
            assert got.quotes is None


@pytest.mark.parametrize("seed", range(4))
def test_the_scan_gives_what_numpy_gives(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random bytes rich in LF, CR and quotes, every length around the 16-byte step."""
    rng = random.Random(seed)
    alphabet = b"\n\r\"'ab,\xff"
    for length in [*range(40), 1000, 4099]:
        data = bytes(rng.choice(alphabet) for _ in range(length))
        quote = ord(rng.choice("\"'"))
        scans_agree(data, quote, rng.randrange(2), monkeypatch)


def test_the_scan_of_a_csv_and_its_views(monkeypatch: pytest.MonkeyPatch) -> None:
    data = b'a,b\r\n"x\ny",2\n\n"say ""hi""\n",3\n' * 50
    scans_agree(data, ord('"'), 0, monkeypatch)
    view = memoryview(data)[7:-5]
    got = scan_newlines(view, ord('"'), 1, keep_quotes=True)
    monkeypatch.setattr(ranges, "_speedups", None)
    assert got.record_ends.tolist() == scan_newlines(view, ord('"'), 1).record_ends.tolist()


def test_the_scan_arrays_can_be_written() -> None:
    """Callers shift positions in place; the numpy path's arrays allow it, so must these."""
    scan = scan_newlines(b'1\n"2\n"\n', ord('"'), keep_quotes=True)
    assert scan.newlines.tolist() == [1, 4, 6] and scan.record_ends.tolist() == [1, 6]
    scan.newlines[0] += 1
    assert scan.quotes is not None and scan.quotes.flags.writeable


@pytest.mark.parametrize(("quote", "parity"), [(10, 0), (256, 0), (-1, 0), (34, 2)])
def test_the_scan_refuses_what_it_cannot_answer(quote: int, parity: int) -> None:
    with pytest.raises(ValueError, match="quote must be"):
        native.scan_lines(b"a\n", quote, parity, False)


def test_a_quote_that_is_lf_is_left_to_numpy() -> None:
    scan = scan_newlines(b"a\nb\n", 10)
    assert scan.newlines.tolist() == [1, 3]


def test_class_runs_by_length_and_bytes() -> None:
    table = bytes(1 if chr(b).isalpha() and b < 128 else 0 for b in range(256))
    values = [b"", b"ab", b"abc", b"abcd", b"a1", "äb".encode()]
    data = b"".join(values)
    offsets = np.cumsum([0, *map(len, values)]).astype(np.int64)
    assert list(native.class_run(data, offsets, table, 2, 3)) == [0, 1, 1, 0, 0, 0]
    assert list(native.class_run(data, offsets, table, 0, -1)) == [1, 1, 1, 1, 0, 0]
    assert native.class_run(b"", np.zeros(1, np.int64), table, 0, -1) == bytearray()


@pytest.mark.parametrize(
    ("offsets", "table"),
    [
        ([0, 9], bytes(256)),
        ([3, 1], bytes(256)),
        ([-1, 1], bytes(256)),
        ([0, 1], bytes(8)),
        ([], bytes(256)),
    ],
    ids=["past-the-end", "inverted", "negative", "short-table", "no-offsets"],
)
def test_class_runs_refuse_what_does_not_fit(offsets: list[int], table: bytes) -> None:
    with pytest.raises(ValueError, match=r"outside|256-byte|int64 offsets"):
        native.class_run(b"abc", np.array(offsets, dtype=np.int64), table, 0, -1)


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string()])
def test_short_key_identities_are_those_numpy_makes(
    kind: pa.DataType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ingest import dedup

    rng = random.Random(5)
    alphabet = "ab\x00\x1fé日-"
    keys = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(20))) for _ in range(3000)]
    keys += ["", "a" * 14, "a" * 15, "a\x00", "a"]
    for texts in (pa.array(keys, kind), pa.array(keys, kind).slice(17, 2000)):
        short, ids = dedup.short_key_identities(texts)
        with monkeypatch.context() as patched:
            patched.setattr(dedup, "_speedups", None)
            want_short, want_ids = dedup.short_key_identities(texts)
        assert short.tolist() == want_short.tolist()
        assert ids.tolist() == want_ids.tolist() and ids.dtype == want_ids.dtype
        assert len(set(ids.tolist())) == len(
            {k for k, s in zip(texts.to_pylist(), short, strict=True) if s}
        )


def test_short_keys_refuse_offsets_outside_the_data() -> None:
    with pytest.raises(ValueError, match="outside"):
        native.short_keys(b"abc", np.array([0, 4], dtype=np.int64))
    with pytest.raises(ValueError, match="int64 offsets"):
        native.short_keys(b"abc", b"")
