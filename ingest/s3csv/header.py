"""The header record of a CSV object: split it off the data, parse it and check its column names."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from ingest.hashing import strip_line_terminator
from ingest.s3csv.ranges import (
    MAX_HEADER_BYTES,
    UTF8_BOM,
    CsvDialect,
    CsvFormatError,
    scan_newlines,
)

__all__ = ["CsvHeader", "parse_header", "split_header", "validate_names"]

# Most headers end in the first few KiB: scan that much before scanning up to the limit.
_FIRST_LOOK = 64 << 10


@dataclass(frozen=True)
class CsvHeader:
    """A header split off a buffer: the names, where the records start, and their first line."""

    names: tuple[str, ...]
    end: int
    first_line: int


def validate_names(names: Iterable[str]) -> tuple[str, ...]:
    """Strip white space and BOMs from column names; refuse empty or duplicate names."""
    cleaned = tuple(name.strip().strip("\ufeff").strip() for name in names)
    if not cleaned:
        raise CsvFormatError("the header names no columns")
    empty = [i + 1 for i, name in enumerate(cleaned) if not name]
    if empty:
        raise CsvFormatError(f"header column(s) {empty} have no name")
    duplicates = sorted(name for name, count in Counter(cleaned).items() if count > 1)
    if duplicates:
        raise CsvFormatError(f"duplicate header names: {', '.join(duplicates)}")
    return cleaned


def parse_header(raw: bytes, dialect: CsvDialect) -> tuple[str, ...]:
    """Parse the raw header record (BOM and CRLF/LF allowed) into checked column names."""
    raw = strip_line_terminator(raw.removeprefix(UTF8_BOM))
    try:
        text = raw.decode(dialect.encoding)
    except UnicodeDecodeError as exc:
        raise CsvFormatError(f"the header is not valid {dialect.encoding}: {exc.reason}") from exc
    try:
        rows = list(
            csv.reader(
                io.StringIO(text, newline=""),
                delimiter=dialect.delimiter,
                quotechar=dialect.quotechar,
                strict=True,
            )
        )
    except csv.Error as exc:
        raise CsvFormatError(f"the header is not a CSV record: {exc}") from exc
    if len(rows) != 1:
        raise CsvFormatError(f"the header must be one record, found {len(rows)}")
    return validate_names(rows[0])


def split_header(data: bytes, dialect: CsvDialect) -> CsvHeader:
    """Find the header record at the start of ``data`` and parse it.

    ``end`` is the offset right after its line terminator (the ``base_offset`` of the
    records that follow) and ``first_line`` the line number of the first record.
    """
    if not dialect.header:
        raise ValueError("the dialect says the data has no header")
    for limit in (_FIRST_LOOK, MAX_HEADER_BYTES):
        scan = scan_newlines(memoryview(data)[:limit], dialect.quote_byte)
        if len(scan.record_ends) or len(data) <= limit:
            break
    else:
        raise CsvFormatError(f"no end of the header line in the first {MAX_HEADER_BYTES} bytes")
    end = int(scan.record_ends[0]) + 1 if len(scan.record_ends) else len(data)
    lines = int((scan.newlines < end).sum())
    return CsvHeader(parse_header(data[:end], dialect), end, lines + 1)
