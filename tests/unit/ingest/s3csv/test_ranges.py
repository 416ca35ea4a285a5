"""Record-aligned byte ranges: plan_ranges, scan_newlines and the index_boundaries pre-pass."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest

from ingest.s3csv.ranges import (
    UTF8_BOM,
    BoundaryIndex,
    ByteRange,
    CsvDialect,
    CsvFormatError,
    index_boundaries,
    plan_ranges,
    scan_newlines,
)

DIALECT = CsvDialect()


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


def index(
    data: bytes, range_size: int, dialect: CsvDialect = DIALECT, chunk: int = 1 << 20
) -> BoundaryIndex:
    return index_boundaries(chunked(data, chunk), len(data), range_size, dialect)


def assert_aligned(data: bytes, ranges: list[ByteRange], quote: bytes = b'"') -> None:
    """Every range starts right after an LF with an even number of quotes before it."""
    for r in ranges[1:]:
        assert data[r.start - 1 : r.start] == b"\n"
        assert data[: r.start].count(quote) % 2 == 0
    for before, after in itertools.pairwise(ranges):
        assert before.end == after.start
    assert [r.index for r in ranges] == list(range(len(ranges)))


class TestPlanRanges:
    def test_splits_by_size_with_a_short_last_range(self) -> None:
        assert plan_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]

    def test_empty_object_has_no_ranges(self) -> None:
        assert plan_ranges(0, 4) == []

    def test_refuses_a_non_positive_range_size(self) -> None:
        with pytest.raises(ValueError):
            plan_ranges(10, 0)


class TestCsvDialect:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {"delimiter": ";;"},
            {"quotechar": ""},
            {"delimiter": '"'},
            {"delimiter": "\n"},
            {"encoding": "utf-16"},
            {"encoding": "no-such-codec"},
            {"encoding": "iso2022_jp"},
            {"encoding": "shift_jis", "delimiter": "|"},
        ],
    )
    def test_refuses_what_byte_scanning_cannot_handle(self, kwargs: dict[str, str]) -> None:
        with pytest.raises(ValueError):
            CsvDialect(**kwargs)

    @pytest.mark.parametrize(
        ("encoding", "delimiter"),
        [("cp1252", ";"), ("shift_jis", ","), ("euc-jp", "|"), ("utf-8-sig", "\t")],
    )
    def test_accepts_encodings_whose_special_bytes_stand_alone(
        self, encoding: str, delimiter: str
    ) -> None:
        assert CsvDialect(delimiter=delimiter, encoding=encoding).encoding == encoding

    def test_knows_utf8_from_other_encodings(self) -> None:
        assert CsvDialect(encoding="UTF8").is_utf8
        assert CsvDialect(encoding="utf-8-sig").is_utf8
        assert not CsvDialect(encoding="latin-1").is_utf8


class TestScanNewlines:
    def test_an_lf_inside_quotes_does_not_end_a_record(self) -> None:
        scan = scan_newlines(b'a,"x\ny"\nb,c\n', ord('"'))
        assert scan.newlines.tolist() == [4, 7, 11]
        assert scan.record_ends.tolist() == [7, 11]
        assert scan.parity == 0

    def test_escaped_quotes_keep_the_parity(self) -> None:
        scan = scan_newlines(b'"say ""hi""\n",b\nc,d\n', ord('"'))
        assert scan.record_ends.tolist() == [15, 19]

    def test_parity_is_carried_in_and_out(self) -> None:
        scan = scan_newlines(b'x"\nb\n', ord('"'), parity=1)
        assert scan.record_ends.tolist() == [2, 4]
        assert scan_newlines(b'open "\n', ord('"')).parity == 1

    def test_empty_input(self) -> None:
        scan = scan_newlines(b"", ord('"'))
        assert len(scan.newlines) == 0 and scan.parity == 0


class TestIndexBoundaries:
    def test_header_is_exposed_and_range_0_starts_after_it(self) -> None:
        data = b"id,name\n1,a\n2,b\n"
        result = index(data, 1 << 20)
        assert result.header == b"id,name\n"
        assert result.ranges == [ByteRange(0, 8, len(data), 2)]
        assert not result.quoted_newlines

    def test_quoted_newline_at_a_split_point_is_never_cut(self) -> None:
        data = b'h\n"0123\n4567\n89"\nnext\n'
        # The nominal start 7 sits on the LF inside the quoted field.
        result = index(data, 7)
        assert [(r.start, r.end, r.first_line) for r in result.ranges] == [(2, 17, 2), (17, 22, 5)]
        assert result.quoted_newlines

    def test_any_chunking_gives_the_same_ranges(self) -> None:
        data = b'id,t\r\n1,"a\r\nb"\r\n2,""""\r\n\r\n3,"x\ny"\r\n4,z\r\n' * 5
        whole = index(data, 9)
        for chunk in (1, 2, 3, 7, 64):
            assert index(data, 9, chunk=chunk) == whole
        assert_aligned(data, whole.ranges)

    def test_first_line_counts_every_physical_line_before_the_range(self) -> None:
        data = b'h\n"a\nb"\n\nc\nd\n'
        starts = {r.start: r.first_line for r in index(data, 1).ranges}
        assert starts == {2: 2, 8: 4, 9: 5, 11: 6}

    def test_empty_ranges_are_dropped_and_the_last_ends_at_size(self) -> None:
        data = b"h\n" + b"x" * 50 + b"\ny\n"
        result = index(data, 4)
        assert [(r.index, r.start, r.end) for r in result.ranges] == [(0, 2, 53), (1, 53, 55)]

    def test_bom_belongs_to_the_header(self) -> None:
        data = UTF8_BOM + b"a,b\r\n1,2\r\n"
        result = index(data, 1 << 20)
        assert result.header == UTF8_BOM + b"a,b\r\n"
        assert result.ranges[0].start == len(result.header)

    def test_without_header_range_0_starts_after_a_bom(self) -> None:
        data = UTF8_BOM + b"1,2\n3,4\n"
        result = index(data, 1 << 20, CsvDialect(header=False), chunk=1)
        assert result.header is None
        assert result.ranges == [ByteRange(0, 3, len(data), 1)]

    @pytest.mark.parametrize("data", [b"", b"a,b", b"a,b\n", b"a,b\r\n"])
    def test_header_only_or_empty_object_has_no_ranges(self, data: bytes) -> None:
        result = index(data, 2)
        assert result.ranges == []
        assert result.header == data

    def test_custom_quote_char(self) -> None:
        data = b"h\n'a\nb';c\nd;e\n"
        result = index(data, 3, CsvDialect(delimiter=";", quotechar="'"))
        assert [r.start for r in result.ranges] == [2, 10]
        assert_aligned(data, result.ranges, b"'")

    def test_size_mismatch_fails_loudly(self) -> None:
        with pytest.raises(ValueError, match="read 4 bytes"):
            index_boundaries([b"a\nb\n"], 10, 2, DIALECT)

    def test_a_header_that_never_ends_is_a_format_error(self) -> None:
        data = b'"' + b"x" * (2 << 20)
        with pytest.raises(CsvFormatError):
            index(data, 1 << 20)

    def test_ranges_match_a_reference_on_random_data(self) -> None:
        rng = np.random.default_rng(7)
        data = bytes(rng.choice(np.frombuffer(b'ab,"\n\n', dtype=np.uint8), 5000))
        data = data + b'"\n' if data.count(b'"') % 2 else data
        ends = [i for i in range(len(data)) if data[i] == 10 and data[:i].count(b'"') % 2 == 0]
        header_end = ends[0] + 1
        for range_size in (1, 17, 100, 999):
            result = index(data, range_size, chunk=61)
            expected = sorted(
                {header_end}
                | {
                    next(e + 1 for e in ends if e + 1 >= t)
                    for t in range(range_size, len(data), range_size)
                    if any(e + 1 >= t for e in ends)
                }
                - {len(data)}
            )
            assert [r.start for r in result.ranges] == [s for s in expected if s >= header_end]
            for r in result.ranges:
                assert r.first_line == data[: r.start].count(b"\n") + 1
