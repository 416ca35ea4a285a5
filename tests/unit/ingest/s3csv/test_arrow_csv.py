"""parse_block: pyarrow's table of a block only when every record is exactly one row."""

from __future__ import annotations

import pytest

from ingest.s3csv.arrow_csv import parse_block
from ingest.s3csv.ranges import CsvDialect

NAMES = ("a", "b")


def rows(block: bytes, count: int) -> list[list[str]] | None:
    table = parse_block(block, count, NAMES, CsvDialect(), use_threads=False)
    if table is None:
        return None
    return [list(row.values()) for row in table.to_pylist()]


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b""])
def test_quoted_newlines_commas_and_quotes(end: bytes) -> None:
    block = b'1,"x\ny"\r\n"2,2","say ""hi"""\n\n3,' + end
    assert rows(block, 3) == [["1", "x\ny"], ["2,2", 'say "hi"'], ["3", ""]]


@pytest.mark.parametrize(
    ("block", "count"),
    [
        (b'1,"open\n', 1),  # a quoted field left open at the end
        (b'1,"open\n2,"shut"\n', 2),  # ... whose quote count is odd all the same
        (b'1,5" pipe "x\n2,y\n', 2),  # an even count of quotes out of place
        (b"1,2,3\n4,5\n", 2),  # a ragged row
        (b"1,2\r3,4\n", 1),  # one record to the LF; pyarrow also ends a row at the CR
    ],
    ids=["open-at-end", "odd-quotes", "stray-quotes", "ragged", "bare-cr"],
)
def test_blocks_it_cannot_trust_go_to_the_slow_path(block: bytes, count: int) -> None:
    assert rows(block, count) is None


def test_the_quote_positions_given_are_used() -> None:
    import numpy as np

    block = b'1,"a"\n2,b\n'
    quotes = np.array([2, 4], dtype=np.int64)
    table = parse_block(block, 2, NAMES, CsvDialect(), use_threads=False, quotes=quotes)
    assert table is not None and table.column("b").to_pylist() == ["a", "b"]
