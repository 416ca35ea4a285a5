"""Turn a buffer of whole CSV records into a table of strings, with content hashes and lineage.

Records are found by quote parity (see :mod:`ingest.s3csv.ranges`), hashed in bulk, and
parsed by ``pyarrow.csv`` block by block (:mod:`ingest.s3csv.arrow_csv`). A block
pyarrow cannot be trusted with is halved until the pieces that still fail are small,
and those are parsed record by record (:mod:`ingest.s3csv.slow_path`): a bad record
costs little time, is rejected alone, and never fails the range.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from hashlib import sha256

import numpy as np
import pyarrow as pa

from ingest.hashing import sha256_hex
from ingest.s3csv.arrow_csv import empty_table, parse_block
from ingest.s3csv.digests import record_hex_digests
from ingest.s3csv.header import parse_header, validate_names
from ingest.s3csv.ranges import UTF8_BOM, CsvDialect, CsvFormatError, NewlineScan, scan_newlines
from ingest.s3csv.slow_path import RecordSpan, SlowParse, parse_slowly, slow_table

__all__ = ["DEFAULT_BLOCK_SIZE", "CsvFormatError", "ParsedRange", "RejectedRecord", "parse_records"]

# Bytes handed to one pyarrow parse: large enough that per-call cost vanishes, small
# enough that one bad record sends little data down the slow path.
DEFAULT_BLOCK_SIZE = 16 << 20
# A refused block is halved until its pieces are this small; only those go record by record.
SLOW_PATH_BYTES = 64 << 10
CR = 0x0D


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
    ``hashes`` is the hashes or a function that computes them: :func:`parse_records` hashes
    the records when ``content_hashes`` is first read, so that a caller can do it while it
    waits for something else (the S3 pipeline, while Redis checks the rows' keys).
    """

    table: pa.Table
    hashes: pa.ChunkedArray | Callable[[], pa.ChunkedArray]
    line_numbers: np.ndarray
    byte_offsets: np.ndarray
    rejected: list[RejectedRecord]
    blank_lines: int

    @property
    def content_hashes(self) -> pa.ChunkedArray:
        if not isinstance(self.hashes, pa.ChunkedArray):
            self.hashes = self.hashes()
        return self.hashes

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
    quotes: np.ndarray  # every quote's position, for the quoting check of each block
    blank_lines: int
    unterminated: bool  # the last record runs to the end of the data inside quotes


def _layout(
    data: bytes | memoryview, dialect: CsvDialect, scan: NewlineScan | None = None
) -> _Layout:
    if scan is None or scan.quotes is None:
        scan = scan_newlines(data, dialect.quote_byte, keep_quotes=True)
    starts = np.concatenate(([0], scan.record_ends + 1))
    stops = np.concatenate((scan.record_ends, [len(data)]))
    if starts[-1] >= len(data):  # data ends with a record terminator: no trailing record
        starts, stops = starts[:-1], stops[:-1]
    elif scan.parity and data[-1:] == b"\n":
        stops[-1] -= 1  # an unclosed quote swallows the last LF; still report it as the end
    as_bytes = np.frombuffer(data, dtype=np.uint8)
    # strip_line_terminator semantics: a CR right before the LF (or the end) is not content.
    ends = stops - ((stops > starts) & (as_bytes[np.maximum(stops - 1, 0)] == CR))
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    return _Layout(
        starts,
        ends,
        np.searchsorted(scan.newlines, starts),
        scan.newlines,
        scan.quotes if scan.quotes is not None else np.empty(0, dtype=np.int64),
        int((~keep).sum()),
        scan.parity == 1,
    )


def _blocks(layout: _Layout, data_size: int, block_size: int) -> list[tuple[int, int, bool]]:
    """Record index ranges ``[i, j)`` of about ``block_size`` bytes, and whether to go slow."""
    count = len(layout.starts)
    fast_end = count - 1 if layout.unterminated else count
    marks = np.arange(block_size, data_size, block_size)
    cuts = np.unique(
        np.concatenate(([0], np.searchsorted(layout.starts[:fast_end], marks), [fast_end]))
    )
    blocks = [(int(i), int(j), False) for i, j in itertools.pairwise(cuts) if j > i]
    if layout.unterminated:
        blocks.append((count - 1, count, True))
    return blocks


class _RangeParser:
    """One :func:`parse_records` call: the data, its records, and the parts parsed so far."""

    def __init__(
        self,
        data: bytes | memoryview,
        names: tuple[str, ...],
        dialect: CsvDialect,
        use_threads: bool,
        scan: NewlineScan | None = None,
    ) -> None:
        self.data, self.names, self.dialect, self.use_threads = data, names, dialect, use_threads
        self.layout = _layout(data, dialect, scan)
        self.hashes = pa.array([], type=pa.string())
        self.tables: list[pa.Table] = []
        # A slow part's hashes, or a fast part's records (first, stop) in ``self.hashes``.
        self.hash_parts: list[pa.Array | tuple[int, int]] = []
        self.hashed = False
        self.line_index: list[np.ndarray] = []
        self.starts: list[np.ndarray] = []
        self.slow_parts: list[SlowParse] = []

    def hash_records(self) -> None:
        layout = self.layout
        self.hashes = record_hex_digests(self.data, layout.starts, layout.ends, layout.newlines)
        self.hashed = True

    def joined_hashes(self) -> pa.ChunkedArray:
        """The hashes of the rows, in the order of the parts: the fast parts' slices of one
        hashing of every record (made now if it was not), the slow parts' own."""
        if not self.hashed and any(isinstance(p, tuple) for p in self.hash_parts):
            self.hash_records()
        parts = [
            self.hashes.slice(p[0], p[1] - p[0]) if isinstance(p, tuple) else p
            for p in self.hash_parts
        ]
        return pa.chunked_array(parts, type=pa.string())

    def fast(self, first: int, stop: int) -> pa.Table | None:
        start = int(self.layout.starts[first])
        end = int(self.layout.starts[stop]) if stop < len(self.layout.starts) else len(self.data)
        block = memoryview(self.data)[start:end]
        quotes = self.layout.quotes
        inside = quotes[np.searchsorted(quotes, start) : np.searchsorted(quotes, end)] - start
        return parse_block(block, stop - first, self.names, self.dialect, self.use_threads, inside)

    def fast_all(self, blocks: list[tuple[int, int, bool]]) -> list[pa.Table | None]:
        return [None if slow else self.fast(first, stop) for first, stop, slow in blocks]

    def add_fast(self, table: pa.Table, first: int, stop: int) -> None:
        self.tables.append(table)
        self.hash_parts.append((first, stop))
        self.line_index.append(self.layout.line_index[first:stop])
        self.starts.append(self.layout.starts[first:stop])

    def add_slow(self, first: int, stop: int) -> None:
        layout = self.layout
        spans = map(
            RecordSpan,
            layout.starts[first:stop].tolist(),
            layout.ends[first:stop].tolist(),
            layout.line_index[first:stop].tolist(),
        )
        slow = parse_slowly(self.data, spans, len(self.names), self.dialect)
        self.tables.append(slow_table(slow, self.names, self.dialect, self.use_threads))
        hexes = [sha256(self.data[s.start : s.end]).hexdigest() for s in slow.good]
        self.hash_parts.append(pa.array(hexes, type=pa.string()))
        self.line_index.append(np.array([s.line for s in slow.good], dtype=np.int64))
        self.starts.append(np.array([s.start for s in slow.good], dtype=np.int64))
        self.slow_parts.append(slow)

    def bisect(self, first: int, stop: int) -> None:
        """Narrow a refused block down by halves, so only small pieces go record by record."""
        starts = self.layout.starts
        end = int(starts[stop]) if stop < len(starts) else len(self.data)
        if stop - first < 2 or end - int(starts[first]) <= SLOW_PATH_BYTES:
            self.add_slow(first, stop)
            return
        middle = int(np.searchsorted(starts, (int(starts[first]) + end) // 2))
        middle = min(max(middle, first + 1), stop - 1)
        for lo, hi in ((first, middle), (middle, stop)):
            table = self.fast(lo, hi)
            if table is None:
                self.bisect(lo, hi)
            else:
                self.add_fast(table, lo, hi)

    def result(self, first_line: int, base_offset: int) -> ParsedRange:
        def joined(arrays: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(arrays) if arrays else np.empty(0, dtype=np.int64)

        table = pa.concat_tables(self.tables) if self.tables else empty_table(self.names)
        hashes = self.joined_hashes() if self.hashed else self.joined_hashes
        rejected = [
            RejectedRecord(
                first_line + span.line,
                base_offset + span.start,
                bytes(self.data[span.start : span.end]),
                reason,
            )
            for slow in self.slow_parts
            for span, reason in slow.bad
        ]
        rejected.sort(key=lambda r: r.byte_offset)
        blank = self.layout.blank_lines + sum(slow.blank_lines for slow in self.slow_parts)
        return ParsedRange(
            table,
            hashes,
            first_line + joined(self.line_index),
            base_offset + joined(self.starts),
            rejected,
            blank,
        )


def parse_records(
    data: bytes | memoryview,
    *,
    header: Sequence[str] | bytes,
    dialect: CsvDialect,
    first_line: int,
    base_offset: int,
    use_threads: bool = False,
    block_size: int = DEFAULT_BLOCK_SIZE,
    scan: NewlineScan | None = None,
) -> ParsedRange:
    """Parse ``data``, a whole number of CSV records, into string columns named by ``header``.

    ``data`` is a range from :func:`~ingest.s3csv.ranges.index_boundaries` or everything
    after the header (:func:`~ingest.s3csv.header.split_header`); it starts at a record
    boundary and ends at one or at the end of the object. ``header`` is the raw header
    record or the column names; ``first_line`` is the line number of the first byte of
    ``data`` and ``base_offset`` its offset in the object. Data at offset 0 may start with
    a UTF-8 BOM, which is skipped. Blank lines are counted, not returned. ``use_threads``
    lets pyarrow use every core and hash while it parses, for callers that are not one
    process per core already. ``scan`` is :func:`~ingest.s3csv.ranges.scan_newlines` of
    ``data`` with ``keep_quotes``, when the caller made it already.
    """
    if isinstance(header, str):
        raise TypeError("header must be the raw header bytes or a sequence of column names")
    names = parse_header(header, dialect) if isinstance(header, bytes) else validate_names(header)
    if base_offset == 0 and data[: len(UTF8_BOM)] == UTF8_BOM:
        data, base_offset, scan = data[len(UTF8_BOM) :], len(UTF8_BOM), None
    parser = _RangeParser(data, names, dialect, use_threads, scan)
    blocks = _blocks(parser.layout, len(data), block_size)
    if use_threads:
        # pyarrow parses without the GIL, so hashing (which holds it) runs alongside.
        with ThreadPoolExecutor(max_workers=1) as pool:
            parsing = pool.submit(parser.fast_all, blocks)
            parser.hash_records()
            tables = parsing.result()
    else:
        tables = parser.fast_all(blocks)  # hashing waits for the first read of the hashes
    for (first, stop, slow), table in zip(blocks, tables, strict=True):
        if table is not None:
            parser.add_fast(table, first, stop)
        elif slow:
            parser.add_slow(first, stop)
        else:
            parser.bisect(first, stop)
    return parser.result(first_line, base_offset)
