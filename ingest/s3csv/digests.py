"""SHA-256 content hashes of all records of a buffer, with the per-record Python work cut down.

The hash of a record is :func:`ingest.hashing.sha256_hex` of its bytes without the line
terminator; here it is computed for all records of a buffer at once and returned as raw
digests or as an Arrow string array of lower-case hex.

Three implementations give bit-identical digests:

- the compiled ``ingest._speedups`` (see ``setup.py``) hashes every span of the buffer in
  one call, without the GIL, with the CPU's SHA instructions where it has them, and writes
  raw digests or hex itself;
- where it was not built, every record goes to polars-hash (Rust) as one Arrow column
  built without a per-record Python loop;
- where polars or polars-hash cannot be imported either, :mod:`hashlib`.

Threads: the polars path hashes one single-chunk column eagerly, which polars runs on the
calling thread; polars' thread pool is not used, so ``POLARS_MAX_THREADS`` does not
matter here and is deliberately left alone (a library cannot set it reliably anyway: it
is read once, when polars is first imported). One thread per call is what a Celery
prefork worker with concurrency = cores wants, and ``parse_records(use_threads=True)``
already overlaps hashing with pyarrow's parsing. Measured on 2 shared cores, splitting
the column over 2 threads cost 10-20 % more CPU per MB and gained no wall time.
"""

from __future__ import annotations

import binascii
import itertools
from hashlib import sha256

import numpy as np
import pyarrow as pa

from ingest.hashing import native_span_digests, native_span_hex, polars_sha256_hex

try:
    import polars as pl
    import polars_hash  # noqa: F401  (the fast path needs it)
except ImportError:  # optional at run time: the hashlib path below gives the same digests
    FAST_PATH = False
else:
    FAST_PATH = True

__all__ = ["DIGEST_SIZE", "FAST_PATH", "hex_digests", "record_digests", "record_hex_digests"]

DIGEST_SIZE = 32
HASH_BATCH_BYTES = 1 << 20
_HASH_TYPE = type(sha256())


def _digest_all(pieces: list[bytes]) -> np.ndarray:
    # map() over C callables keeps the per-record loop out of the interpreter's bytecode.
    joined = b"".join(map(_HASH_TYPE.digest, map(sha256, pieces)))
    return np.frombuffer(joined, dtype=np.uint8).reshape(-1, DIGEST_SIZE)


def _digest_spans(data: bytes, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    pieces = list(map(data.__getitem__, map(slice, starts.tolist(), ends.tolist())))
    return _digest_all(pieces)


def _line_separator(data: bytes, newlines: np.ndarray) -> bytes | None:
    """The separator whose ``split`` yields exactly the physical lines' content, if any."""
    if data.find(b"\r") < 0:
        return b"\n"
    if data.count(b"\r\n") == len(newlines):
        return b"\r\n"
    return None


def _batches(starts: np.ndarray, batch_bytes: int) -> list[tuple[int, int]]:
    marks = np.arange(int(starts[0]) + batch_bytes, int(starts[-1]), batch_bytes)
    cuts = np.unique(np.concatenate(([0], np.searchsorted(starts, marks), [len(starts)])))
    return [(int(i), int(j)) for i, j in itertools.pairwise(cuts) if j > i]


def record_digests(
    data: bytes | memoryview, starts: np.ndarray, ends: np.ndarray, newlines: np.ndarray
) -> np.ndarray:
    """Return the SHA-256 digests, shape ``(n, 32)``, of the records ``data[starts[i]:ends[i]]``.

    ``ends`` exclude the line terminator; ``newlines`` are all LF positions in ``data``.
    """
    if not len(starts):
        return np.empty((0, DIGEST_SIZE), dtype=np.uint8)
    native = native_span_digests(data, starts, ends)
    if native is not None:
        return native
    if FAST_PATH:
        digests = _polars_digests(data, starts, ends)
        if digests is not None:
            return digests
    # The fallback splits and slices ``data`` as bytes; a view is copied once for it.
    return _hashlib_digests(bytes(data), starts, ends, newlines)


def record_hex_digests(
    data: bytes | memoryview, starts: np.ndarray, ends: np.ndarray, newlines: np.ndarray
) -> pa.StringArray:
    """:func:`record_digests` as lower-case hex, the form contentHash is stored in.

    Both the compiled hash and polars-hash write hex themselves: taking it as it comes skips
    turning it into bytes and back, which cost a tenth of the hashing.
    """
    if len(starts):
        native = native_span_hex(data, starts, ends)
        if native is not None:
            return native
    if FAST_PATH and len(starts):
        text = _polars_hex(data, starts, ends)
        if text is not None:
            return text
    return hex_digests(record_digests(data, starts, ends, newlines))


def _polars_hex(
    data: bytes | memoryview, starts: np.ndarray, ends: np.ndarray
) -> pa.StringArray | None:
    """The hex digests by polars-hash as a string array, or None if the spans are unsorted."""
    text = _polars_hex_text(data, starts, ends)
    if text is None:
        return None
    if pa.types.is_large_string(text.type) and len(text) * 2 * DIGEST_SIZE < 2**31:
        text = text.cast(pa.string())  # the type contentHash has always had
    return text


def _polars_digests(
    data: bytes | memoryview, starts: np.ndarray, ends: np.ndarray
) -> np.ndarray | None:
    """The digests by polars-hash, or None if the spans are not in order (then use hashlib)."""
    text = _polars_hex_text(data, starts, ends)
    if text is None:
        return None
    if not pa.types.is_large_string(text.type):
        text = text.cast(pa.large_string())
    count = len(starts)
    bounds = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset : text.offset + count + 1]
    # Every value is 64 hex digits, so the values buffer is the digests back to back.
    raw = binascii.unhexlify(memoryview(text.buffers()[2])[int(bounds[0]) : int(bounds[-1])])
    # A read-only view of ``raw``, as _digest_spans already returns: callers only read
    # digests, and a copy cost up to a fifth of the time on a busy machine (fresh pages).
    return np.frombuffer(raw, dtype=np.uint8).reshape(count, DIGEST_SIZE)


def _polars_hex_text(
    data: bytes | memoryview, starts: np.ndarray, ends: np.ndarray
) -> pa.Array | None:
    """polars-hash's hex digests of the spans (checked: 64 digits each), None if unsorted."""
    count = len(starts)
    # One binary array over ``data`` as it is, no copy: its elements alternate between the
    # gap before a record (terminator, blank lines) and the record, so offsets are
    # [0, s0, e0, s1, e1, ...]. Polars keeps only the odd elements, the records.
    offsets = np.empty(2 * count + 1, dtype=np.int64)
    offsets[0] = 0
    offsets[1::2] = starts
    offsets[2::2] = ends
    if offsets[-1] > len(data) or bool((offsets[1:] < offsets[:-1]).any()):
        return None  # unsorted or overlapping spans cannot share one offsets buffer
    spans = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), 2 * count, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    records = pl.Series("record", spans).gather_every(2, offset=1)
    return polars_sha256_hex(records)


def _hashlib_digests(
    data: bytes, starts: np.ndarray, ends: np.ndarray, newlines: np.ndarray
) -> np.ndarray:
    """:func:`record_digests` with :mod:`hashlib`, for when polars-hash is not installed."""
    separator = _line_separator(data, newlines) if len(newlines) else None
    if separator is None:
        return _digest_spans(data, starts, ends)
    # bytes.split is far cheaper than one slice per record: hash every physical line, then
    # patch the records that are not exactly one line (quoted newlines, a bare CR). Batches
    # of about a MiB keep the short-lived line objects in cache.
    line_of = np.searchsorted(newlines, starts)
    on_last_line = line_of >= len(newlines)
    line_end = np.where(
        on_last_line,
        len(data),
        newlines[np.minimum(line_of, len(newlines) - 1)] - (len(separator) - 1),
    )
    digests = np.empty((len(starts), DIGEST_SIZE), dtype=np.uint8)
    for first, stop in _batches(starts, HASH_BATCH_BYTES):
        piece = data[int(starts[first]) : int(ends[stop - 1])]
        line_digests = _digest_all(piece.split(separator))
        lines = line_of[first:stop] - line_of[first]
        if lines[-1] == stop - first - 1:  # one record per line: no reindexing needed
            digests[first:stop] = line_digests[: stop - first]
        else:
            digests[first:stop] = line_digests[lines]
    other = np.flatnonzero(line_end != ends)
    if len(other):
        digests[other] = _digest_spans(data, starts[other], ends[other])
    return digests


def hex_digests(digests: np.ndarray) -> pa.StringArray:
    """Format digests of shape ``(n, 32)`` as an Arrow array of 64-character lower-case hex."""
    count = len(digests)
    width = 2 * DIGEST_SIZE
    if count * width >= 2**31:
        raise ValueError(f"too many digests for one string array: {count}")
    text = binascii.hexlify(np.ascontiguousarray(digests).data)
    offsets = np.arange(0, (count + 1) * width, width, dtype=np.int32)
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(text)]
    return pa.Array.from_buffers(pa.string(), count, buffers)
