"""Turn a buffer of whole CSV records into a table of strings, with content hashes and lineage.

Records are found by quote parity (see :mod:`ingest.s3csv.ranges`), hashed in bulk, and
parsed by ``pyarrow.csv`` block by block. A block whose parse fails or whose row count
disagrees with its record count is parsed again record by record
(:mod:`ingest.s3csv.slow_path`), so a bad record costs its block some speed and is
rejected alone; it never fails the range.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from hashlib import sha256

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ingest.hashing import sha256_hex
from ingest.s3csv.digests import DIGEST_SIZE, hex_digests, record_digests
from ingest.s3csv.header import parse_header, validate_names
from ingest.s3csv.ranges import UTF8_BOM, CsvDialect, CsvFormatError, scan_newlines
from ingest.s3csv.slow_path import RecordSpan, SlowParse, parse_slowly

__all__ = ["DEFAULT_BLOCK_SIZE", "CsvFormatError", "ParsedRange", "RejectedRecord", "parse_records"]

# Bytes handed to one pyarrow parse: large enough that per-call cost vanishes, small
# enough that one bad record sends little data down the slow path.
DEFAULT_BLOCK_SIZE = 16 << 20
CR = 0x0D
LF = 0x0A


@dataclass(frozen=True)
class RejectedRecord:
    """A record that could not be parsed: where it is, its raw bytes (no terminator), and why."""

    line_number: int
    byte_offset: int
    raw: bytes
    reason: str

    @property
    def content_hash(self) -> str:
        return sha256_hex(self.raw)


@dataclass
class ParsedRange:
    """The good rows as a table of strings, their lineage row by row, and the rejects.

    ``content_hashes``, ``line_numbers`` and ``byte_offsets`` are aligned with the rows
    of ``table``; line numbers are 1-based physical lines, offsets are absolute in the object.
    """

    table: pa.Table
    content_hashes: pa.ChunkedArray
    line_numbers: np.ndarray
    byte_offsets: np.ndarray
    rejected: list[RejectedRecord]
    blank_lines: int

    @property
    def records_total(self) -> int:
        return self.table.num_rows + len(self.rejected)


@dataclass(frozen=True)
class _Layout:
    """The non-blank records of a buffer: content spans and 0-based line indexes."""

    starts: np.ndarray
    ends: np.ndarray
    line_index: np.ndarray
    newlines: np.ndarray
    blank_lines: int
    unterminated: bool  # the last record runs to the end of the data inside quotes


@dataclass
class _Parts:
    tables: list[pa.Table] = field(default_factory=list)
    digests: list[np.ndarray] = field(default_factory=list)
    line_index: list[np.ndarray] = field(default_factory=list)
    starts: list[np.ndarray] = field(default_factory=list)
    slow: list[SlowParse] = field(default_factory=list)


def _layout(data: bytes, dialect: CsvDialect) -> _Layout:
    scan = scan_newlines(data, dialect.quote_byte)
    starts = np.concatenate(([0], scan.record_ends + 1))
    stops = np.concatenate((scan.record_ends, [len(data)]))
    if starts[-1] >= len(data):  # data ends with a record terminator: no trailing record
        starts, stops = starts[:-1], stops[:-1]
    elif scan.parity and data.endswith(b"\n"):
        stops[-1] -= 1  # an unclosed quote swallows the last LF; still report it as the end
    as_bytes = np.frombuffer(data, dtype=np.uint8)
    # strip_line_terminator semantics: a CR right before the LF (or the end) is not content.
    ends = stops - ((stops > starts) & (as_bytes[np.maximum(stops - 1, 0)] == CR))
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    return _Layout(starts, ends, np.searchsorted(scan.newlines, starts), scan.newlines,
                   int((~keep).sum()), scan.parity == 1)


def _blocks(layout: _Layout, data_size: int, block_size: int) -> list[tuple[int, int, bool]]:
    """Record index ranges ``[i, j)`` of about ``block_size`` bytes, and whether to go slow."""
    count = len(layout.starts)
    fast_end = count - 1 if layout.unterminated else count
    marks = np.arange(block_size, data_size, block_size)
    cuts = np.unique(np.concatenate(([0], np.searchsorted(layout.starts[:fast_end], marks),
                                     [fast_end])))
    blocks = [(int(i), int(j), False) for i, j in itertools.pairwise(cuts) if j > i]
    if layout.unterminated:
        blocks.append((count - 1, count, True))
    return blocks


def _read_arrow(buffer: bytes | memoryview, names: Sequence[str], dialect: CsvDialect,
                use_threads: bool) -> pa.Table:
    """Parse UTF-8 CSV bytes (whatever ``dialect.encoding``) as string columns ``names``."""
    return pacsv.read_csv(
        pa.py_buffer(buffer),
        read_options=pacsv.ReadOptions(column_names=list(names), use_threads=use_threads),
        parse_options=pacsv.ParseOptions(delimiter=dialect.delimiter,
                                         quote_char=dialect.quotechar, newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()),
                                             strings_can_be_null=False),
    )


def _empty_table(names: Sequence[str]) -> pa.Table:
    return pa.table({name: pa.array([], type=pa.string()) for name in names})


def _quotes_follow_rfc4180(block: bytes, dialect: CsvDialect) -> bool:
    """Whether every quote opens a field, closes one, or is half of an escaped ``""``.

    Then quote parity is exactly the parser's "inside a quoted field" state, so pyarrow's
    rows line up with the parity records; stray quotes (``5" pipe``) could shift rows
    while keeping their count, so such blocks go down the slow path.
    """
    as_bytes = np.frombuffer(block, dtype=np.uint8)
    quotes = np.flatnonzero(as_bytes == dialect.quote_byte)
    if not len(quotes):
        return True
    before = as_bytes[np.maximum(quotes - 1, 0)]
    after = as_bytes[np.minimum(quotes + 1, len(as_bytes) - 1)]
    escaped = np.zeros(len(quotes), dtype=bool)
    escaped[1:] = quotes[1:] - 1 == quotes[:-1]
    delimiter = ord(dialect.delimiter)
    opens = (quotes == 0) | (before == delimiter) | (before == LF) | escaped
    closes = ((quotes == len(as_bytes) - 1) | (after == delimiter) | (after == LF) | (after == CR)
              | (after == dialect.quote_byte))
    outside = np.arange(len(quotes)) % 2 == 0  # the parity before each quote
    return bool(np.all(np.where(outside, opens, closes)))


def _fast_block(data: bytes, layout: _Layout, first: int, stop: int, names: Sequence[str],
                dialect: CsvDialect, use_threads: bool) -> pa.Table | None:
    """Parse records ``[first, stop)`` in one go; ``None`` when that cannot be trusted."""
    end = int(layout.starts[stop]) if stop < len(layout.starts) else len(data)
    block = data[int(layout.starts[first]):end]
    if not dialect.is_utf8:
        try:
            block = block.decode(dialect.encoding).encode("utf-8")
        except UnicodeDecodeError:
            return None
    if not _quotes_follow_rfc4180(block, dialect):
        return None
    # pyarrow closes a quote left open at the end of its input without a word; a sentinel
    # row after the block is swallowed in that case, which the row count then shows.
    sentinel = dialect.delimiter.join(["x"] * len(names)).encode()
    block += sentinel if block.endswith(b"\n") else b"\n" + sentinel
    try:
        table = _read_arrow(block, names, dialect, use_threads)
    except pa.ArrowInvalid:
        return None
    # Equal counts mean every parity record became exactly one row (blank lines are
    # skipped by both); anything else (ragged rows, a bare CR, stray quotes) goes slow.
    count = stop - first
    if table.num_rows != count + 1 or table.column(0)[count].as_py() != "x":
        return None
    return table.slice(0, count)


def _fast_tables(data: bytes, layout: _Layout, blocks: list[tuple[int, int, bool]],
                 names: Sequence[str], dialect: CsvDialect,
                 use_threads: bool) -> list[pa.Table | None]:
    return [None if slow else _fast_block(data, layout, first, stop, names, dialect, use_threads)
            for first, stop, slow in blocks]


def _slow_table(slow: SlowParse, names: Sequence[str], dialect: CsvDialect,
                use_threads: bool) -> pa.Table:
    """The good records of a slow block, parsed by pyarrow like the fast path when it can."""
    if not slow.rows:
        return _empty_table(names)
    try:
        table = _read_arrow("\n".join(slow.texts).encode("utf-8"), names, dialect, use_threads)
        if table.num_rows == len(slow.rows):
            return table
    except pa.ArrowInvalid:
        pass
    columns = zip(*slow.rows, strict=True)
    return pa.table({name: pa.array(column, type=pa.string())
                     for name, column in zip(names, columns, strict=True)})


def _parse_block_slowly(data: bytes, layout: _Layout, first: int, stop: int, names: Sequence[str],
                        dialect: CsvDialect, use_threads: bool, parts: _Parts) -> None:
    spans = map(RecordSpan, layout.starts[first:stop].tolist(), layout.ends[first:stop].tolist(),
                layout.line_index[first:stop].tolist())
    slow = parse_slowly(data, spans, len(names), dialect)
    parts.tables.append(_slow_table(slow, names, dialect, use_threads))
    digests = b"".join(sha256(data[s.start:s.end]).digest() for s in slow.good)
    parts.digests.append(np.frombuffer(digests, dtype=np.uint8).reshape(-1, DIGEST_SIZE))
    parts.line_index.append(np.array([s.line for s in slow.good], dtype=np.int64))
    parts.starts.append(np.array([s.start for s in slow.good], dtype=np.int64))
    parts.slow.append(slow)


def _assemble(data: bytes, parts: _Parts, layout: _Layout, names: Sequence[str],
              first_line: int, base_offset: int) -> ParsedRange:
    def joined(arrays: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(arrays) if arrays else np.empty(0, dtype=np.int64)

    table = pa.concat_tables(parts.tables) if parts.tables else _empty_table(names)
    hashes = pa.chunked_array([hex_digests(d) for d in parts.digests], type=pa.string())
    rejected = [RejectedRecord(first_line + span.line, base_offset + span.start,
                               data[span.start:span.end], reason)
                for slow in parts.slow for span, reason in slow.bad]
    rejected.sort(key=lambda r: r.byte_offset)
    blank = layout.blank_lines + sum(slow.blank_lines for slow in parts.slow)
    return ParsedRange(table, hashes, first_line + joined(parts.line_index),
                       base_offset + joined(parts.starts), rejected, blank)


def parse_records(data: bytes, *, header: Sequence[str] | bytes, dialect: CsvDialect,
                  first_line: int, base_offset: int, use_threads: bool = False,
                  block_size: int = DEFAULT_BLOCK_SIZE) -> ParsedRange:
    """Parse ``data``, a whole number of CSV records, into string columns named by ``header``.

    ``header`` is the raw header record or the column names; ``first_line`` is the line
    number of the first byte of ``data`` and ``base_offset`` its offset in the object.
    Data at offset 0 may start with a UTF-8 BOM, which is skipped. ``use_threads`` lets
    pyarrow use every core, for callers that are not one process per core already.
    """
    names = parse_header(header, dialect) if isinstance(header, bytes) else validate_names(header)
    if base_offset == 0 and data.startswith(UTF8_BOM):
        data, base_offset = data[len(UTF8_BOM):], len(UTF8_BOM)
    layout = _layout(data, dialect)
    blocks = _blocks(layout, len(data), block_size)
    if use_threads:
        # pyarrow parses without the GIL, so hashing (which holds it) runs alongside.
        with ThreadPoolExecutor(max_workers=1) as pool:
            parsing = pool.submit(_fast_tables, data, layout, blocks, names, dialect, True)
            all_digests = record_digests(data, layout.starts, layout.ends, layout.newlines)
            tables = parsing.result()
    else:
        all_digests = record_digests(data, layout.starts, layout.ends, layout.newlines)
        tables = _fast_tables(data, layout, blocks, names, dialect, False)
    parts = _Parts()
    for (first, stop, _), table in zip(blocks, tables, strict=True):
        if table is None:
            _parse_block_slowly(data, layout, first, stop, names, dialect, use_threads, parts)
            continue
        parts.tables.append(table)
        parts.digests.append(all_digests[first:stop])
        parts.line_index.append(layout.line_index[first:stop])
        parts.starts.append(layout.starts[first:stop])
    return _assemble(data, parts, layout, names, first_line, base_offset)
