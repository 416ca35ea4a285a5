"""Content hashing: the SHA-256 identity of every record that enters IntelGraph."""

from __future__ import annotations

import binascii
import hashlib
import json
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # webhook processes import this module: numpy and pyarrow load on first use
    import numpy as np
    import polars as pl
    import pyarrow as pa

from ingest.speedups import native as _native  # None where not built: polars-hash, hashlib
from ingest.speedups import value_buffers

__all__ = [
    "DIGEST_SIZE",
    "HASH_ALGORITHM",
    "NATIVE_BACKEND",
    "canonical_json",
    "canonical_text",
    "digests_from_hex_text",
    "hex_text",
    "native_span_digests",
    "native_span_hex",
    "polars_sha256_hex",
    "sha256_digests",
    "sha256_hex",
    "strip_line_terminator",
]

HASH_ALGORITHM = "SHA-256"
DIGEST_SIZE = 32
_HEX_WIDTH = 2 * DIGEST_SIZE

#: How :func:`native_span_digests` compresses blocks: ``"sha-ni"`` (the CPU's SHA
#: instructions), ``"portable"`` (C), or None where ``ingest._speedups`` was not built.
NATIVE_BACKEND: str | None = _native.BACKEND if _native is not None else None


def sha256_hex(content: bytes) -> str:
    """Return the lower-case hex SHA-256 of ``content``."""
    return hashlib.sha256(content).hexdigest()


# json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
# builds an encoder with these options on every call; one made once encodes the same text.
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# The C encoder behind _CANONICAL, called directly: the same text without the per-call set-up
# (no circular-reference markers, which parsed JSON cannot need; deep nesting still raises
# RecursionError, as json.dumps does).
_canonical_chunks = (
    c_make_encoder(None, _not_json, encode_basestring, None, ":", ",", True, False, False)
    if c_make_encoder is not None
    else None
)


def canonical_text(value: Any) -> str:
    """``value`` as canonical JSON text (see :func:`canonical_json`), not yet encoded."""
    if _canonical_chunks is None or type(value) is not dict:
        return _CANONICAL.encode(value)
    return "".join(_canonical_chunks(value, 0))


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` as canonical JSON: keys sorted, no insignificant white space, UTF-8."""
    return canonical_text(value).encode("utf-8")


def strip_line_terminator(line: bytes) -> bytes:
    """Drop a trailing LF or CRLF, so that both line endings hash the same."""
    if line.endswith(b"\n"):
        line = line[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    return line


def sha256_digests(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The SHA-256 digests, shape ``(n, 32)``, of every value of a string or binary column.

    Nulls are not allowed. The compiled ``ingest._speedups`` hashes the column's values
    buffer in one call where it was built; otherwise polars-hash (Rust), whose hex output
    becomes raw bytes in one call; the :mod:`hashlib` loop is the last fallback. No
    per-value Python object is made on the first two, which is what costs when a column has
    hundreds of thousands of values.
    """
    import numpy as np
    import pyarrow as pa

    if values.null_count:
        raise ValueError("cannot hash a column holding nulls")
    if len(values) == 0:
        return np.empty((0, DIGEST_SIZE), dtype=np.uint8)
    if _native is not None:
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
        found = value_buffers(values)
        if found is not None:
            data, offsets = found
            digests = native_span_digests(data, offsets[:-1], offsets[1:])
            assert digests is not None  # _native is there
            return digests
    try:  # imported here: webhook processes import this module and never need polars
        import polars as pl
        import polars_hash  # noqa: F401  (only to know it is there)
    except ImportError:  # optional at run time: hashlib gives the same digests, slower
        raw = b"".join(hashlib.sha256(v).digest() for v in _as_bytes(values))
        return np.frombuffer(raw, dtype=np.uint8).reshape(-1, DIGEST_SIZE)
    return digests_from_hex_text(polars_sha256_hex(pl.Series("v", values)))


def native_span_digests(data: Any, starts: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
    """The SHA-256 digests, shape ``(n, 32)``, of ``data[starts[i]:ends[i]]`` by the compiled
    ``ingest._speedups``, in one call without the GIL; None where it was not built.

    ``data`` is any buffer (bytes, a memoryview, an Arrow buffer). Spans outside it raise
    ``ValueError``.
    """
    import numpy as np

    if _native is None:
        return None
    raw, _ = _native.sha256_spans(data, _int64(starts), _int64(ends), True, False)
    assert raw is not None
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, DIGEST_SIZE)


def native_span_hex(data: Any, starts: np.ndarray, ends: np.ndarray) -> pa.Array | None:
    """:func:`native_span_digests` as an Arrow array of 64 lower-case hex digits each (the
    form ``contentHash`` is stored in), written by the same call; None where not built."""
    if _native is None:
        return None
    _, text = _native.sha256_spans(data, _int64(starts), _int64(ends), False, True)
    assert text is not None
    return hex_text(text, len(starts))


def _int64(values: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.ascontiguousarray(values, dtype=np.int64)


def hex_text(text: bytes, count: int) -> pa.Array:
    """An Arrow array over ``count`` hex digests written back to back in ``text``: ``string``,
    or ``large_string`` when they are too many for 32-bit offsets."""
    import numpy as np
    import pyarrow as pa

    if len(text) != count * _HEX_WIDTH:
        raise ValueError(f"expected {count} digests of 64 hex digits, got {len(text)} bytes")
    large = count * _HEX_WIDTH >= 2**31
    kind = np.int64 if large else np.int32
    offsets = np.arange(0, (count + 1) * _HEX_WIDTH, _HEX_WIDTH, dtype=kind)
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(text)]
    return pa.Array.from_buffers(pa.large_string() if large else pa.string(), count, buffers)


def polars_sha256_hex(series: pl.Series) -> pa.Array:
    """polars-hash's SHA-256 of every value of ``series`` (binary or text, no nulls), as one
    Arrow string array of 64 hex digits each, checked. The one place the plugin is called:
    for a column here, for the records of a CSV range in ``ingest.s3csv.digests``.

    One chunk, eager: polars runs the plugin on this thread, not on its pool.
    """
    import polars as pl
    import polars_hash as plh
    import pyarrow as pa

    hexes = series.to_frame().select(plh.col(series.name).chash.sha2_256()).to_series()
    text = hexes.to_arrow(compat_level=pl.CompatLevel.oldest())
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    if hexes.null_count() or len(text) != len(series) or not _all_hex_width(text):
        raise RuntimeError("polars-hash sha2_256 returned something other than 64 hex digits")
    return text


def _all_hex_width(text: pa.Array) -> bool:
    """Whether every value of a string array is exactly 64 characters (bytes) long."""
    import numpy as np
    import pyarrow as pa

    kind = np.int64 if pa.types.is_large_string(text.type) else np.int32
    bounds = np.frombuffer(text.buffers()[1], dtype=kind)[text.offset : text.offset + len(text) + 1]
    return bool((np.diff(bounds) == _HEX_WIDTH).all())


def _as_bytes(values: pa.Array | pa.ChunkedArray) -> list[bytes]:
    import pyarrow as pa

    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return [v.encode() for v in values.to_pylist()]
    return list(values.to_pylist())


def digests_from_hex_text(text: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Raw digests ``(n, 32)`` from a column of 64-character hex SHA-256 values, no nulls.

    Every value being 64 characters, the values buffer holds the hex digits back to back
    and one ``unhexlify`` call turns all of them into bytes.
    """
    import numpy as np
    import pyarrow as pa

    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks() if text.num_chunks != 1 else text.chunk(0)
    count = len(text)
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
        raise TypeError(f"expected hex digests as strings, got {text.type}")
    kind = np.int64 if pa.types.is_large_string(text.type) else np.int32
    bounds = np.frombuffer(text.buffers()[1], dtype=kind)[text.offset : text.offset + count + 1]
    if text.null_count or int(bounds[-1] - bounds[0]) != count * _HEX_WIDTH:
        raise ValueError("expected 64 hex digits in every value")
    if count and bool((np.diff(bounds) != _HEX_WIDTH).any()):
        raise ValueError("expected 64 hex digits in every value")
    raw = binascii.unhexlify(memoryview(text.buffers()[2])[int(bounds[0]) : int(bounds[-1])])
    return np.frombuffer(raw, dtype=np.uint8).reshape(count, DIGEST_SIZE)
