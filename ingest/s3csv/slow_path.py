"""Record-by-record parsing with the csv module, for the blocks the vectorised fast path refuses.

Each record is decoded and parsed on its own, so a bad record (invalid bytes, wrong
number of fields, an unterminated quote) is rejected alone. A "record" found by quote
parity that the csv module reads as several rows (a stray quote inside an unquoted
field joins lines up to the next stray quote) is split back into those rows.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from ingest.s3csv.arrow_csv import empty_table, quotes_follow_rfc4180, read_strings
from ingest.s3csv.ranges import CsvDialect

__all__ = ["RecordSpan", "SlowParse", "parse_slowly", "slow_table"]

# The csv module refuses fields over 128 KiB by default; pyarrow has no such limit, and a
# record must not be rejected only because a bad neighbour sent its block down this path.
csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
_SENTINEL = "\ue000end of record\ue000"  # a private-use character: never a delimiter or quote


@dataclass(frozen=True)
class RecordSpan:
    """A record's content ``data[start:end]`` (terminator excluded) and its 0-based line index."""

    start: int
    end: int
    line: int


@dataclass
class SlowParse:
    """Good records with their fields and decoded text, bad records with a reason."""

    good: list[RecordSpan] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    bad: list[tuple[RecordSpan, str]] = field(default_factory=list)
    blank_lines: int = 0


def _split_rows(text: str, dialect: CsvDialect) -> Iterator[tuple[int, int, list[str] | str]]:
    """Yield ``(first line, end line, fields or error)`` for each csv row in ``text``.

    The csv module, lenient like pyarrow (the two agree row for row), closes a quote left
    open at the end of its input without a word: a sentinel line after the text is
    swallowed in that case, which is how an unterminated quote is told apart.
    """
    lines = text.split("\n")
    fed = [line + "\n" for line in lines]
    fed.append(_SENTINEL)
    reader = csv.reader(fed, delimiter=dialect.delimiter, quotechar=dialect.quotechar)
    consumed = 0
    while True:
        try:
            row: list[str] | str = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            row = f"malformed CSV: {exc}"
        end = reader.line_num
        if end > len(lines):
            if row != [_SENTINEL]:
                yield consumed, len(lines), "unterminated quoted field"
            return
        yield consumed, end, row
        consumed = end


def _line_starts(text: str, encoding: str) -> list[int]:
    """Byte offset of each line of ``text`` within its encoded form, plus the total length."""
    offsets = [0]
    for line in text.split("\n"):
        offsets.append(offsets[-1] + len(line.encode(encoding)) + 1)
    offsets[-1] -= 1
    return offsets


def _parse_record(
    raw: bytes, span: RecordSpan, ncols: int, dialect: CsvDialect, out: SlowParse
) -> None:
    # utf-8-sig would drop a BOM-like start of a record, and add one to each re-encoded line.
    encoding = "utf-8" if dialect.is_utf8 else dialect.encoding
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        out.bad.append(
            (span, f"invalid {dialect.encoding} at byte {exc.start} of the record: {exc.reason}")
        )
        return
    lines = text.split("\n")
    offsets = _line_starts(text, encoding) if len(lines) > 1 else [0, len(raw)]
    for first, last, row in _split_rows(text, dialect):
        sub_text = "\n".join(lines[first:last])
        sub_end = offsets[last]
        if last < len(lines):
            sub_end -= 1  # the LF that ends this row inside the parity record
            if sub_text.endswith("\r"):
                sub_text, sub_end = sub_text[:-1], sub_end - 1
        sub = RecordSpan(span.start + offsets[first], span.start + sub_end, span.line + first)
        if row == []:
            out.blank_lines += 1
        elif isinstance(row, str):
            out.bad.append((sub, row))
        elif len(row) != ncols:
            out.bad.append((sub, f"expected {ncols} fields, found {len(row)}"))
        else:
            out.good.append(sub)
            out.rows.append(row)
            out.texts.append(sub_text)


def parse_slowly(
    data: bytes | memoryview, spans: Iterable[RecordSpan], ncols: int, dialect: CsvDialect
) -> SlowParse:
    """Parse the records ``spans`` of ``data`` one by one, expecting ``ncols`` fields."""
    out = SlowParse()
    for span in spans:
        _parse_record(bytes(data[span.start : span.end]), span, ncols, dialect, out)
    return out


def slow_table(
    slow: SlowParse, names: Sequence[str], dialect: CsvDialect, use_threads: bool
) -> pa.Table:
    """The good records as a table, parsed by pyarrow like the fast path when that is safe."""
    if not slow.rows:
        return empty_table(names)
    text = "\n".join(slow.texts).encode("utf-8")
    if quotes_follow_rfc4180(text, dialect):
        try:
            table = read_strings(text, names, dialect, use_threads)
            if table.num_rows == len(slow.rows):
                return table
        except pa.ArrowInvalid:
            pass
    # The csv module reads each record as pyarrow would; only the row alignment of one
    # parse over stray quotes could differ, so its fields are the answer then.
    columns = zip(*slow.rows, strict=True)
    return pa.table(
        {
            name: pa.array(column, type=pa.string())
            for name, column in zip(names, columns, strict=True)
        }
    )
