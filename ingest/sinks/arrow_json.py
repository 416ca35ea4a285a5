"""Arrow struct columns to JSON text, column at a time in Arrow's kernels: no Python per row.

A sink that stores JSON (the PostgreSQL sink's ``jsonb`` columns) gets hundreds of thousands
of rows per batch from the S3 import. ``json.dumps`` on each row costs tens of microseconds;
building the text from whole columns with ``pyarrow.compute`` costs well under one. Only types
without a column-wise encoding here (lists, maps, binary, durations) fall back to ``json.dumps``
per value, and a column that holds one value throughout is encoded once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["COPY_CSV_OPTIONS", "copy_chunks", "json_texts"]

# COPY ... (FORMAT csv) options under which JSON text needs no quoting or escaping: JSON
# text never holds a raw tab, newline or \x01 (control characters are always escaped).
COPY_CSV_OPTIONS = "FORMAT csv, DELIMITER E'\\t', QUOTE E'\\x01'"
_NULL = pa.scalar("null")
_TWO_DIGITS = pa.array([f"{i:02d}" for i in range(60)])
_CONTROL = r"[\x00-\x1f]"
_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))


Piece: TypeAlias = "str | pa.ChunkedArray"  # literal JSON text, or a column of JSON texts


def copy_chunks(
    data: pa.ChunkedArray, provenance: pa.ChunkedArray, rows: int
) -> Iterator[memoryview]:
    """COPY CSV payload (see ``COPY_CSV_OPTIONS``): ``ordinal, data, provenance`` per line."""
    for start in range(0, len(data), rows):
        size = min(rows, len(data) - start)
        ordinal = pa.array(np.arange(start, start + size, dtype=np.int64)).cast(pa.string())
        # One join builds each whole line: no intermediate copies of the two objects.
        pieces: list[Piece] = [pa.chunked_array([ordinal]), "\t"]
        pieces += _pieces(data.slice(start, size))
        pieces.append("\t")
        pieces += _pieces(provenance.slice(start, size))
        pieces.append("\n")
        yield _concatenated(_join(pieces, size).combine_chunks())


def _concatenated(text: pa.Array) -> memoryview:
    """The values of a string array without nulls, back to back: its data buffer, uncopied."""
    kind = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(text.buffers()[1], dtype=kind)
    first, last = int(offsets[text.offset]), int(offsets[text.offset + len(text)])
    return memoryview(text.buffers()[2])[first:last]


def json_texts(array: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    """The JSON text of every value of ``array`` (``null`` for nulls), as a string column."""
    if isinstance(array, pa.Array):
        array = pa.chunked_array([array])
    kind = array.type
    if len(array) == 0:
        return pa.chunked_array([], type=pa.string())
    if pa.types.is_dictionary(kind):
        return json_texts(array.cast(kind.value_type))
    if pa.types.is_struct(kind):
        text = _join(_object_pieces(array), len(array))
        return pc.if_else(pc.is_valid(array), text, _NULL) if array.null_count else text
    if pa.types.is_null(kind):
        return pa.chunked_array([pa.repeat(_NULL, len(array))], type=pa.string())
    if pa.types.is_string(kind):
        return _strings(array)
    if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        # One text type for every piece of a line: binary_join wants them all alike.
        return _strings(array.cast(pa.string()))
    if pa.types.is_boolean(kind):
        return _or_null(pc.if_else(array, pa.scalar("true"), pa.scalar("false")))
    if pa.types.is_integer(kind) or pa.types.is_decimal(kind):
        return _or_null(array.cast(pa.string()))
    if pa.types.is_floating(kind):
        return _floats(array)
    if pa.types.is_date(kind):
        return _strings(array.cast(pa.string()))
    if pa.types.is_timestamp(kind):
        return _timestamps(array)
    return _per_value(array)


def _or_null(text: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.fill_null(text, _NULL)


def _join(pieces: list[Piece], n: int) -> pa.ChunkedArray:
    """Concatenate pieces row by row; adjacent literals are merged first."""
    merged: list[Piece] = []
    for piece in pieces:
        last = merged[-1] if merged else None
        if isinstance(piece, str) and isinstance(last, str):
            merged[-1] = last + piece
        else:
            merged.append(piece)
    if len(merged) == 1 and isinstance(merged[0], str):
        return pa.chunked_array([pa.repeat(pa.scalar(merged[0]), n)], type=pa.string())
    args = [pa.scalar(p) if isinstance(p, str) else p for p in merged]
    return pc.binary_join_element_wise(*args, "")


def _pieces(array: pa.ChunkedArray) -> list[Piece]:
    if pa.types.is_struct(array.type) and array.null_count == 0:
        return _object_pieces(array)
    return [json_texts(array)]


def _object_pieces(array: pa.ChunkedArray) -> list[Piece]:
    """A struct column as pieces; a field with one value throughout becomes literal text."""
    kind = array.type
    if kind.num_fields == 0:
        return ["{}"]
    pieces: list[Piece] = []
    for i, child in enumerate(array.flatten()):
        pieces.append(("{" if i == 0 else ",") + json.dumps(kind.field(i).name) + ":")
        constant = _constant_json(child)
        pieces.append(constant if constant is not None else json_texts(child))
    pieces.append("}")
    return pieces


def _constant_json(array: pa.ChunkedArray) -> str | None:
    """The JSON text of the one value ``array`` holds in every row, else None."""
    if len(array) == 0 or array.null_count == len(array):
        return "null"
    if array.null_count:
        return None
    first = array[0]
    try:
        same = bool(pc.all(pc.equal(array, first)).as_py())
    except pa.ArrowNotImplementedError:  # lists, structs: compare whole columns instead
        same = array.equals(pa.chunked_array([pa.repeat(first, len(array))]))
    if not same:
        return None
    return str(json_texts(array.slice(0, 1))[0].as_py())


def _strings(array: pa.ChunkedArray) -> pa.ChunkedArray:
    text = array
    if pc.any(pc.match_substring_regex(text, '[\\\\"\\x00-\\x1f]')).as_py():
        for raw, escaped in _ESCAPES:
            text = pc.replace_substring(text, raw, escaped)
        if pc.any(pc.match_substring_regex(text, _CONTROL)).as_py():
            return _per_value(array)  # rare control characters: json.dumps knows them all
    quoted = pc.binary_join_element_wise(pa.scalar('"'), text, pa.scalar('"'), "")
    return _or_null(quoted)


def _floats(array: pa.ChunkedArray) -> pa.ChunkedArray:
    values = array.cast(pa.float64())
    # JSON has no NaN or infinity: a missing measurement is null.
    finite = pc.if_else(pc.is_finite(values), values, pa.scalar(None, pa.float64()))
    text = finite.cast(pa.string())  # shortest text that reads back as the same double
    # Arrow writes 100.0 as "100"; keep it a float for readers that tell the two apart.
    whole = pc.match_substring_regex(text, "^-?[0-9]+$")
    text = pc.if_else(whole, pc.binary_join_element_wise(text, pa.scalar(".0"), ""), text)
    return _or_null(text)


def _timestamps(array: pa.ChunkedArray) -> pa.ChunkedArray:
    """ISO 8601 as Python's isoformat() writes it, "Z" for UTC; by arithmetic, not strftime.

    strftime and Arrow's own cast both take over two microseconds a value; this takes a
    quarter of that.
    """
    micros = array.cast(pa.timestamp("us", array.type.tz), safe=False).combine_chunks()
    us = pc.fill_null(micros.cast(pa.int64()), 0).to_numpy()
    seconds = us // 1_000_000
    days = seconds // 86_400
    clock = seconds - days * 86_400
    date = pa.array(days.astype(np.int32), type=pa.date32()).cast(pa.string())
    fraction = us - seconds * 1_000_000
    pieces: list[Piece] = ['"', pa.chunked_array([date]), "T"]
    for value, tail in ((clock // 3600, ":"), (clock % 3600 // 60, ":"), (clock % 60, "")):
        pieces += [pa.chunked_array([_TWO_DIGITS.take(pa.array(value))]), tail]
    if fraction.any():
        digits = pc.utf8_lpad(pa.array(fraction).cast(pa.string()), 6, "0")
        dotted = pc.binary_join_element_wise(pa.scalar("."), digits, "")
        blank = pa.scalar("")
        pieces.append(pa.chunked_array([pc.if_else(pa.array(fraction != 0), dotted, blank)]))
    pieces.append('"' if array.type.tz is None else 'Z"')
    text = _join(pieces, len(us))
    return pc.if_else(pc.is_valid(micros), text, _NULL) if micros.null_count else text


def _per_value(array: pa.ChunkedArray) -> pa.ChunkedArray:
    """``json.dumps`` of each value (dates and times inside as ISO text)."""
    texts = [
        json.dumps(v, ensure_ascii=False, separators=(",", ":"), default=_iso)
        for v in array.to_pylist()
    ]
    return pa.chunked_array([pa.array(texts, type=pa.string())])


def _iso(value: object) -> str:
    isoformat = getattr(value, "isoformat", None)
    if isoformat is not None:
        return str(isoformat())
    if isinstance(value, bytes):
        return value.hex()
    return str(value)
