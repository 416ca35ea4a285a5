"""Split a CSV object into byte ranges that start and end on record boundaries.

A record boundary is an LF outside any quoted field: an LF preceded by an even number of
quote characters since the start of the object (RFC 4180 escapes a quote as ``""``, which
counts twice and keeps the parity). One streaming pre-pass (:func:`index_boundaries`) finds
these LFs with numpy and places every range start at one of them, so a quoted field holding
a newline is never cut in two, and range tasks read exactly their bytes with no over-read
and no guessing. The parity rule assumes an ASCII-compatible encoding (UTF-8, Latin-1,
cp1252...) and a quote character that appears in unquoted fields only as RFC 4180 allows;
a stray quote in an unquoted field flips the parity until the next stray quote, which
keeps boundaries consistent but puts the lines between them into one range.
"""

from __future__ import annotations

import codecs
import functools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ingest.speedups import native as _speedups  # None where not built: numpy then

__all__ = [
    "UTF8_BOM",
    "BoundaryIndex",
    "ByteRange",
    "CsvDialect",
    "CsvFormatError",
    "NewlineScan",
    "index_boundaries",
    "plan_ranges",
    "scan_newlines",
]

UTF8_BOM = codecs.BOM_UTF8
LF = 0x0A
# Numpy temporaries are sized by this, not by the input: bounded memory, and big enough
# that the per-call overhead does not show.
SCAN_BLOCK = 8 << 20
# A header line longer than this means the file is not a CSV (or has an unclosed quote).
MAX_HEADER_BYTES = 1 << 20


class CsvFormatError(ValueError):
    """The object cannot be read as CSV at all (as opposed to one bad record)."""


@functools.lru_cache(maxsize=64)
def _bytes_are_unambiguous(encoding: str, specials: str) -> bool:
    """Whether each special character is one ASCII byte that no other character contains.

    Boundaries are found on raw bytes; that rules out UTF-16/32, 7-bit stateful codecs
    (ISO-2022, UTF-7) and double-byte codecs whose second byte may be ASCII (Shift-JIS
    and GBK with ``|``, for instance).
    """
    try:
        name = codecs.lookup(encoding).name
    except LookupError as exc:
        raise ValueError(f"unknown encoding {encoding!r}") from exc
    if name.startswith(("iso2022", "utf-7", "hz")):
        return False
    for char in specials:
        if char.encode(name).removeprefix(UTF8_BOM) != char.encode("ascii"):
            return False
        # No valid character may have the special byte as its second half.
        if any(_decodes_to_one_char(bytes((lead, ord(char))), name) for lead in range(0x80, 0x100)):
            return False
    return True


def _decodes_to_one_char(pair: bytes, encoding: str) -> bool:
    try:
        return len(pair.decode(encoding)) == 1
    except UnicodeDecodeError:
        return False


@dataclass(frozen=True)
class CsvDialect:
    """How the CSV is written; delimiter and quote char are single ASCII characters."""

    delimiter: str = ","
    quotechar: str = '"'
    encoding: str = "utf-8"
    header: bool = True

    def __post_init__(self) -> None:
        for name in ("delimiter", "quotechar"):
            value = getattr(self, name)
            if len(value) != 1 or not value.isascii() or value in "\r\n":
                raise ValueError(f"{name} must be one ASCII character, not CR or LF: {value!r}")
        if self.delimiter == self.quotechar:
            raise ValueError("delimiter and quotechar must differ")
        if not _bytes_are_unambiguous(self.encoding, f"\n{self.quotechar}{self.delimiter}"):
            raise ValueError(
                f"encoding {self.encoding!r} cannot be split on raw bytes: LF, "
                f"{self.quotechar!r} or {self.delimiter!r} may be part of a character"
            )

    @property
    def quote_byte(self) -> int:
        return ord(self.quotechar)

    @property
    def is_utf8(self) -> bool:
        """True when the bytes are UTF-8 already (a BOM, if any, is handled separately)."""
        return codecs.lookup(self.encoding).name in ("utf-8", "utf-8-sig")


@dataclass(frozen=True)
class ByteRange:
    """The records that start in ``[start, end)``; the first is on 1-based line ``first_line``."""

    index: int
    start: int
    end: int
    first_line: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class BoundaryIndex:
    """The result of the pre-pass over one object.

    ``header`` is the raw header record with its line terminator (``None`` when the
    dialect has no header), ``ranges`` the record-aligned ranges in order, and
    ``quoted_newlines`` whether any quoted field holds a newline.
    """

    header: bytes | None
    ranges: list[ByteRange]
    quoted_newlines: bool


@dataclass(frozen=True)
class NewlineScan:
    """LF positions of a buffer: all of them, those that end a record, and the final parity.

    ``quotes`` holds every quote's position when the scan was asked to keep them.
    """

    newlines: np.ndarray
    record_ends: np.ndarray
    parity: int
    quotes: np.ndarray | None = None


def scan_newlines(
    data: bytes | memoryview, quote: int, parity: int = 0, keep_quotes: bool = False
) -> NewlineScan:
    """Find every LF in ``data`` and those outside quotes, starting at quote ``parity``.

    ``keep_quotes`` also returns the quote positions the scan finds anyway, for a caller
    that checks the quoting next (:func:`ingest.s3csv.arrow_csv.quotes_follow_rfc4180`)
    and would otherwise search the same bytes again.

    The compiled ``ingest._speedups.scan_lines`` does it in one pass where it was built;
    numpy, block by block, otherwise. Both give the same arrays.
    """
    if _speedups is not None and quote != LF:
        found = _speedups.scan_lines(data, quote, parity & 1, keep_quotes)
        return NewlineScan(
            np.frombuffer(found[0], dtype=np.int64),
            np.frombuffer(found[1], dtype=np.int64),
            found[3],
            None if found[2] is None else np.frombuffer(found[2], dtype=np.int64),
        )
    view = memoryview(data).cast("B")
    newlines: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    kept: list[np.ndarray] = []
    for offset in range(0, len(view), SCAN_BLOCK):
        block = np.frombuffer(view[offset : offset + SCAN_BLOCK], dtype=np.uint8)
        quotes = np.flatnonzero(block == quote)
        lfs = np.flatnonzero(block == LF)
        # Quotes before each LF, plus the carry, decide whether that LF is inside a field.
        even = ((np.searchsorted(quotes, lfs) + parity) & 1) == 0
        newlines.append(lfs + offset)
        ends.append(lfs[even] + offset)
        if keep_quotes:
            kept.append(quotes + offset)
        parity = (parity + len(quotes)) & 1
    empty = np.empty(0, dtype=np.int64)
    if not newlines:
        return NewlineScan(empty, empty, parity, empty if keep_quotes else None)
    return NewlineScan(
        np.concatenate(newlines).astype(np.int64, copy=False),
        np.concatenate(ends).astype(np.int64, copy=False),
        parity,
        np.concatenate(kept).astype(np.int64, copy=False) if keep_quotes else None,
    )


def plan_ranges(size: int, range_size: int) -> list[tuple[int, int]]:
    """Split ``size`` bytes into nominal ``[start, end)`` ranges of ``range_size`` bytes."""
    if range_size <= 0:
        raise ValueError(f"range_size must be positive, got {range_size}")
    return [(start, min(start + range_size, size)) for start in range(0, size, range_size)]


class _BoundaryScanner:
    """The state carried from chunk to chunk by :func:`index_boundaries`."""

    def __init__(self, size: int, range_size: int, dialect: CsvDialect) -> None:
        self.dialect = dialect
        self.size = size
        self.pos = 0
        self.parity = 0
        self.lines = 0
        self.quoted_newlines = False
        self.head = bytearray()  # the header while it is being read, else the first bytes
        self.body_start: int | None = None if dialect.header else 0
        self.body_first_line = 1
        # Nominal starts of ranges 1..n still waiting for a boundary at or after them.
        self.targets = np.array([s for s, _ in plan_ranges(size, range_size)][1:], dtype=np.int64)
        self.starts: dict[int, int] = {}

    def feed(self, chunk: bytes) -> None:
        scan = scan_newlines(chunk, self.dialect.quote_byte, self.parity)
        self.quoted_newlines |= len(scan.record_ends) != len(scan.newlines)
        record_starts = scan.record_ends + 1 + self.pos
        if self.body_start is None:
            self._read_header(chunk, record_starts, scan)
        elif len(self.head) < len(UTF8_BOM):
            self.head += chunk[: len(UTF8_BOM) - len(self.head)]
        if len(self.targets) and len(record_starts):
            found = np.searchsorted(record_starts, self.targets)
            resolved = found < len(record_starts)
            starts = record_starts[found[resolved]]
            # LFs before a record start, counted within this chunk, give its line number.
            lines = self.lines + np.searchsorted(scan.newlines, starts - self.pos) + 1
            self.starts.update(zip(starts.tolist(), lines.tolist(), strict=True))
            self.targets = self.targets[~resolved]
        self.pos += len(chunk)
        self.lines += len(scan.newlines)
        self.parity = scan.parity

    def _read_header(self, chunk: bytes, record_starts: np.ndarray, scan: NewlineScan) -> None:
        if not len(record_starts):
            self.head += chunk
            if len(self.head) > MAX_HEADER_BYTES:
                raise CsvFormatError(f"no end of the header in the first {MAX_HEADER_BYTES} bytes")
            return
        end = int(record_starts[0])
        self.head += chunk[: end - self.pos]
        self.body_start = end
        self.body_first_line = self.lines + int(np.searchsorted(scan.newlines, end - self.pos)) + 1

    def finish(self) -> BoundaryIndex:
        if self.pos != self.size:
            raise ValueError(f"read {self.pos} bytes of an object of {self.size} bytes")
        header = bytes(self.head) if self.dialect.header else None
        if self.body_start is None:
            return BoundaryIndex(header, [], self.quoted_newlines)
        body_start = self.body_start
        if not self.dialect.header and self.head.startswith(UTF8_BOM):
            body_start = len(UTF8_BOM)
        if body_start >= self.size:
            return BoundaryIndex(header, [], self.quoted_newlines)
        starts = {body_start: self.body_first_line}
        starts.update((s, line) for s, line in self.starts.items() if body_start < s < self.size)
        ordered = sorted(starts)
        ends = [*ordered[1:], self.size]
        ranges = [
            ByteRange(i, start, end, starts[start])
            for i, (start, end) in enumerate(zip(ordered, ends, strict=True))
        ]
        return BoundaryIndex(header, ranges, self.quoted_newlines)


def index_boundaries(
    chunks: Iterable[bytes], size: int, range_size: int, dialect: CsvDialect
) -> BoundaryIndex:
    """Stream an object's bytes once and return its header and record-aligned ranges.

    ``chunks`` are the object's bytes in order, in pieces of any size; ``size`` is the
    object's size, checked against the bytes read. Range 0 starts right after the header
    (or a UTF-8 BOM when there is no header); range *i* starts at the first record
    boundary at or after ``i * range_size``; empty ranges are dropped and the last range
    ends at ``size``.
    """
    scanner = _BoundaryScanner(size, range_size, dialect)
    for chunk in chunks:
        scanner.feed(chunk)
    return scanner.finish()
