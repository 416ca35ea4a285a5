"""The compiled ``ingest._sha256``: both of its block functions agree with hashlib, and
``sha256_digests`` gives the same digests with it, with polars-hash and with hashlib."""

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

native = pytest.importorskip("ingest._sha256", reason="ingest._sha256 is not built here")
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
