"""``pyarrow.csv`` over blocks of whole records: every column a string, and only trusted rows.

pyarrow is lenient where a record is broken (it closes an open quote at the end of its
input, reads a quote inside an unquoted field as text), so a block's table is used only
when its quotes follow RFC 4180 and its rows match the records one for one.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ingest.s3csv.ranges import CsvDialect

__all__ = ["empty_table", "parse_block", "quotes_follow_rfc4180", "read_strings"]

CR = 0x0D
LF = 0x0A


def read_strings(
    buffer: bytes | memoryview, names: Sequence[str], dialect: CsvDialect, use_threads: bool
) -> pa.Table:
    """Parse UTF-8 CSV bytes (whatever ``dialect.encoding``) as string columns ``names``."""
    return pacsv.read_csv(
        pa.py_buffer(buffer),
        read_options=pacsv.ReadOptions(column_names=list(names), use_threads=use_threads),
        parse_options=pacsv.ParseOptions(
            delimiter=dialect.delimiter, quote_char=dialect.quotechar, newlines_in_values=True
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False
        ),
    )


def empty_table(names: Sequence[str]) -> pa.Table:
    """A table with no rows and a string column per name."""
    return pa.table({name: pa.array([], type=pa.string()) for name in names})


def quotes_follow_rfc4180(
    block: bytes | memoryview, dialect: CsvDialect, quotes: np.ndarray | None = None
) -> bool:
    """Whether every quote opens a field, closes one, or is half of an escaped ``""``.

    Then quote parity is exactly the parser's "inside a quoted field" state, so pyarrow's
    rows line up with the parity records; stray quotes (``5" pipe``) could shift rows
    while keeping their count. ``quotes``, the quote positions in ``block`` when the caller
    has them already, saves searching the block for them again.
    """
    as_bytes = np.frombuffer(block, dtype=np.uint8)
    if quotes is None:
        quotes = np.flatnonzero(as_bytes == dialect.quote_byte)
    if not len(quotes):
        return True
    before, after = _neighbour_tables(dialect.delimiter, dialect.quotechar)
    # Quotes at even positions in the list open a field: after a delimiter or LF, at the
    # start, or as the second half of an escaped pair.
    opening = quotes[0::2]
    opens = before[as_bytes[np.maximum(opening - 1, 0)]] | (opening == 0)
    opens[1:] |= opening[1:] - 1 == quotes[1::2][: len(opening) - 1]
    # Quotes at odd positions close a field: before a delimiter, CR, LF, a quote, the end.
    closing = quotes[1::2]
    closes = after[as_bytes[np.minimum(closing + 1, len(as_bytes) - 1)]]
    closes |= closing == len(as_bytes) - 1
    return bool(opens.all() and closes.all())


@functools.lru_cache(maxsize=16)
def _neighbour_tables(delimiter: str, quotechar: str) -> tuple[np.ndarray, np.ndarray]:
    """Byte lookup tables: which bytes may stand before an opening / after a closing quote."""
    before = np.zeros(256, dtype=bool)
    before[[ord(delimiter), LF]] = True
    after = np.zeros(256, dtype=bool)
    after[[ord(delimiter), LF, CR, ord(quotechar)]] = True
    before.flags.writeable = after.flags.writeable = False  # shared through the cache
    return before, after


def parse_block(
    block: bytes | memoryview,
    count: int,
    names: Sequence[str],
    dialect: CsvDialect,
    use_threads: bool,
    quotes: np.ndarray | None = None,
) -> pa.Table | None:
    """Parse a block of ``count`` records; ``None`` when its rows cannot be trusted.

    ``quotes`` are the quote positions in ``block`` if the caller knows them already.
    """
    if not dialect.is_utf8:
        try:
            block = bytes(block).decode(dialect.encoding).encode("utf-8")
        except UnicodeDecodeError:
            return None
        quotes = None  # positions in the original encoding do not hold after re-encoding
    if quotes is None:
        quotes = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == dialect.quote_byte)
    # An odd count leaves a quoted field open at the end, which pyarrow would close without a
    # word: the slow path's. With an even count and every quote in its place, no field is
    # left open, so the block is parsed as it is, with no copy.
    if len(quotes) % 2 or not quotes_follow_rfc4180(block, dialect, quotes):
        return None
    try:
        table = read_strings(block, names, dialect, use_threads)
    except pa.ArrowInvalid:
        return None
    # Equal counts mean every record became exactly one row (blank lines are skipped by
    # both); anything else (ragged rows, a bare CR) is for the slow path.
    if table.num_rows != count:
        return None
    return table
