"""Bytes to records: parse_records, the header helpers, hashing and lineage, rejects."""

from __future__ import annotations

import csv
import io
import random

import numpy as np
import pyarrow as pa
import pytest

from ingest import hashing
from ingest.hashing import sha256_hex
from ingest.s3csv import digests, records
from ingest.s3csv.header import parse_header, split_header
from ingest.s3csv.ranges import UTF8_BOM, CsvDialect, CsvFormatError, index_boundaries
from ingest.s3csv.records import DEFAULT_BLOCK_SIZE, ParsedRange, parse_records

DIALECT = CsvDialect()


def parse(
    data: bytes,
    dialect: CsvDialect = DIALECT,
    use_threads: bool = False,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> ParsedRange:
    """Parse a whole object (header included) as one range."""
    header = split_header(data, dialect)
    return parse_records(
        data[header.end :],
        header=list(header.names),
        dialect=dialect,
        first_line=header.first_line,
        base_offset=header.end,
        use_threads=use_threads,
        block_size=block_size,
    )


def rows(result: ParsedRange) -> list[list[str]]:
    return [list(row.values()) for row in result.table.to_pylist()]


def lineage(result: ParsedRange) -> list[tuple[str, int, int]]:
    return list(
        zip(
            result.content_hashes.to_pylist(),
            result.line_numbers.tolist(),
            result.byte_offsets.tolist(),
            strict=True,
        )
    )


class TestHeader:
    def test_bom_crlf_and_white_space_are_stripped(self) -> None:
        assert parse_header(UTF8_BOM + b" id , name\r\n", DIALECT) == ("id", "name")

    @pytest.mark.parametrize("raw", [b"a,b,a\n", b"a,,b\n", b"a, \n"])
    def test_duplicate_or_empty_names_are_refused(self, raw: bytes) -> None:
        with pytest.raises(CsvFormatError):
            parse_header(raw, DIALECT)

    def test_names_given_as_a_list_are_checked_too(self) -> None:
        with pytest.raises(CsvFormatError, match="duplicate"):
            parse_records(b"1,2\n", header=["x", "x"], dialect=DIALECT, first_line=2, base_offset=4)

    def test_split_header_tells_where_records_start(self) -> None:
        header = split_header(b'"multi\nline",b\r\n1,2\r\n', DIALECT)
        assert (header.names, header.end, header.first_line) == (("multi\nline", "b"), 16, 3)

    def test_header_bytes_may_be_passed_straight_from_the_index(self) -> None:
        result = parse_records(
            b"1,2\n", header=UTF8_BOM + b"a,b\r\n", dialect=DIALECT, first_line=2, base_offset=8
        )
        assert result.table.column_names == ["a", "b"]


class TestFastPath:
    def test_columns_are_strings_named_by_the_header(self) -> None:
        result = parse(b"id,score,note\n1,2.5,\n2,,x\n")
        assert result.table.column_names == ["id", "score", "note"]
        assert all(str(t) == "string" for t in result.table.schema.types)
        assert rows(result) == [["1", "2.5", ""], ["2", "", "x"]]

    def test_hash_line_and_offset_of_every_row(self) -> None:
        data = b"a,b\n1,2\n3,4"
        assert lineage(parse(data)) == [(sha256_hex(b"1,2"), 2, 4), (sha256_hex(b"3,4"), 3, 8)]
        assert parse(data).records_total == 2

    def test_crlf_row_hashes_like_the_lf_row(self) -> None:
        lf, crlf = parse(b"a,b\n1,2\n"), parse(b"a,b\r\n1,2\r\n")
        assert lf.content_hashes.to_pylist() == crlf.content_hashes.to_pylist()
        assert rows(crlf) == [["1", "2"]]

    def test_quoted_newline_is_hashed_with_the_record_and_lines_stay_right(self) -> None:
        data = b'a,b\n1,"x\r\ny\nz"\r\n2,"q"\n3,w\n'
        result = parse(data)
        assert rows(result) == [["1", "x\r\ny\nz"], ["2", "q"], ["3", "w"]]
        assert result.content_hashes.to_pylist()[0] == sha256_hex(b'1,"x\r\ny\nz"')
        assert result.line_numbers.tolist() == [2, 5, 6]

    def test_escaped_quotes(self) -> None:
        assert rows(parse(b'a,b\n"say ""hi""",""""\n')) == [['say "hi"', '"']]

    @pytest.mark.parametrize(
        ("delimiter", "quotechar"), [(";", '"'), ("|", '"'), ("\t", '"'), (",", "'")]
    )
    def test_custom_delimiter_and_quote(self, delimiter: str, quotechar: str) -> None:
        dialect = CsvDialect(delimiter=delimiter, quotechar=quotechar)
        q, d = quotechar, delimiter
        data = f"a{d}b\n{q}x{d}y{q}{d}{q}1\n2{q}\n".encode()
        assert rows(parse(data, dialect)) == [[f"x{d}y", "1\n2"]]

    def test_latin1_is_transcoded_and_hashed_as_raw_bytes(self) -> None:
        dialect = CsvDialect(encoding="latin-1")
        result = parse(b"name,city\nJos\xe9,K\xf6ln\n", dialect)
        assert rows(result) == [["José", "Köln"]]
        assert result.content_hashes.to_pylist() == [sha256_hex(b"Jos\xe9,K\xf6ln")]

    def test_blank_lines_are_skipped_and_counted(self) -> None:
        result = parse(b"a,b\n\n1,2\r\n\r\n\r\n3,4\n\n")
        assert rows(result) == [["1", "2"], ["3", "4"]]
        assert result.line_numbers.tolist() == [3, 6]
        assert (result.blank_lines, result.records_total) == (4, 2)

    @pytest.mark.parametrize("data", [b"", b"a,b\n", b"a,b"])
    def test_empty_or_header_only_gives_an_empty_table(self, data: bytes) -> None:
        result = (
            parse(data)
            if data
            else parse_records(b"", header=["a", "b"], dialect=DIALECT, first_line=1, base_offset=0)
        )
        assert result.table.column_names == ["a", "b"]
        assert result.table.num_rows == 0 and result.records_total == 0
        assert len(result.content_hashes) == 0 and len(result.line_numbers) == 0

    def test_bom_at_offset_zero_is_skipped_without_a_header(self) -> None:
        result = parse_records(
            UTF8_BOM + b"1,2\n",
            header=["a", "b"],
            dialect=CsvDialect(header=False),
            first_line=1,
            base_offset=0,
        )
        assert rows(result) == [["1", "2"]]
        assert lineage(result) == [(sha256_hex(b"1,2"), 1, 3)]

    @pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
    def test_hashing_in_small_batches_gives_the_same_hashes(
        self, monkeypatch: pytest.MonkeyPatch, eol: bytes
    ) -> None:
        record = b'%d,"v' + eol + b'%d"' + eol + eol + b"%d,x" + eol
        data = b"a,b" + eol + b"".join(record % (i, i, i) for i in range(50))
        expected = parse(data).content_hashes.to_pylist()
        # Batches belong to the hashlib fallback, used when neither the compiled hash nor
        # polars-hash is there.
        monkeypatch.setattr(hashing, "_native", None)
        monkeypatch.setattr(digests, "FAST_PATH", False)
        monkeypatch.setattr(digests, "HASH_BATCH_BYTES", 7)
        assert parse(data).content_hashes.to_pylist() == expected
        assert expected[:2] == [sha256_hex(b'0,"v' + eol + b'0"'), sha256_hex(b"0,x")]

    def test_threads_give_the_same_result(self) -> None:
        data = b"a,b\n" + b"".join(b'%d,"v\n%d"\n' % (i, i) for i in range(500))
        one, many = parse(data), parse(data, use_threads=True, block_size=64)
        assert rows(one) == rows(many) and lineage(one) == lineage(many)


class TestRejects:
    def test_invalid_utf8_rejects_its_row_alone(self) -> None:
        result = parse(b"a,b\n1,ok\n2,bad\xff\n3,ok\n")
        assert rows(result) == [["1", "ok"], ["3", "ok"]]
        [bad] = result.rejected
        assert (bad.line_number, bad.byte_offset, bad.raw) == (3, 9, b"2,bad\xff")
        assert "utf-8" in bad.reason
        assert bad.content_hash == sha256_hex(b"2,bad\xff")
        assert result.records_total == 3

    def test_utf8_sig_slow_path_keeps_offsets_exact(self) -> None:
        data = UTF8_BOM + b'a,b\n1,"\xc3\xa9\n\xc3\xa9"\n2,\xff\n3,x\n'
        result = parse(data, CsvDialect(encoding="utf-8-sig"))
        assert rows(result) == [["1", "é\né"], ["3", "x"]]
        assert lineage(result) == [
            (sha256_hex(b'1,"\xc3\xa9\n\xc3\xa9"'), 2, 7),
            (sha256_hex(b"3,x"), 5, 21),
        ]
        assert (result.rejected[0].byte_offset, result.rejected[0].line_number) == (17, 4)

    def test_invalid_bytes_for_another_encoding(self) -> None:
        result = parse(b"a,b\n1,\xe9\n2,x\n", CsvDialect(encoding="ascii"))
        assert rows(result) == [["2", "x"]]
        assert "ascii" in result.rejected[0].reason

    @pytest.mark.parametrize(("line", "found"), [(b"1,2,3", 3), (b"1", 1)])
    def test_ragged_rows_are_rejected(self, line: bytes, found: int) -> None:
        result = parse(b"a,b\n1,2\n" + line + b"\r\n3,4\n")
        assert rows(result) == [["1", "2"], ["3", "4"]]
        [bad] = result.rejected
        assert bad.raw == line and bad.line_number == 3
        assert bad.reason == f"expected 2 fields, found {found}"

    def test_unterminated_quote_at_the_end_is_rejected(self) -> None:
        result = parse(b'a,b\n1,2\n3,"open\n4,5\n')
        assert rows(result) == [["1", "2"]]
        [bad] = result.rejected
        assert (bad.raw, bad.line_number) == (b'3,"open\n4,5', 3)
        assert "unterminated" in bad.reason

    def test_stray_quotes_in_unquoted_fields_are_split_back_into_rows(self) -> None:
        result = parse(b'a,b\n5" pipe,x\nplain,y\n3" bolt,z\n')
        assert rows(result) == [['5" pipe', "x"], ["plain", "y"], ['3" bolt', "z"]]
        assert lineage(result) == [
            (sha256_hex(b'5" pipe,x'), 2, 4),
            (sha256_hex(b"plain,y"), 3, 14),
            (sha256_hex(b'3" bolt,z'), 4, 22),
        ]

    def test_bare_cr_in_an_unquoted_field_is_rejected(self) -> None:
        result = parse(b"a,b\n1,x\ry\n2,z\n")
        assert rows(result) == [["2", "z"]]
        assert result.rejected[0].raw == b"1,x\ry"

    def test_a_bad_row_does_not_change_good_rows_of_other_blocks(self) -> None:
        good = b"".join(b'%d,"v %d"\n' % (i, i) for i in range(200))
        clean = parse(b"a,b\n" + good + good, block_size=256)
        dirty = parse(b"a,b\n" + good + b"x\n" + good, block_size=256)
        assert rows(dirty) == rows(clean)
        assert dirty.content_hashes.to_pylist() == clean.content_hashes.to_pylist()


def random_csv(rng: random.Random, *, dirty: bool) -> bytes:
    """A CSV with quoted commas, quotes, CR/LF inside fields, CRLF and blank lines.

    ``dirty`` adds ragged rows, stray quotes and an invalid byte.
    """
    alphabet = ["a", "b", "é", " ", ",", '"', "\n", "\r\n", "x"]
    lines = ["h1,h2,h3"]
    for _ in range(rng.randint(0, 40)):
        fields = []
        for _ in range(3):
            value = "".join(rng.choices(alphabet, k=rng.randint(0, 6)))
            if any(c in value for c in ',"\r\n') or rng.random() < 0.2:
                value = '"' + value.replace('"', '""') + '"'
            fields.append(value)
        roll = rng.random()
        if dirty and roll < 0.1:
            fields.append("extra")
        elif dirty and roll < 0.13:
            fields[0] = 'stray"quote'  # not RFC 4180: a quote inside an unquoted field
        elif roll < 0.15:
            fields = [""]  # a blank line
        lines.append(",".join(fields))
    text = "".join(line + rng.choice(["\n", "\r\n"]) for line in lines)
    data = text.encode()
    if dirty and rng.random() < 0.5 and len(data) > 20:
        cut = rng.randrange(10, len(data))
        data = data[:cut] + b"\xff" + data[cut:]
    return data if rng.random() < 0.8 else data.rstrip(b"\r\n")


def ranges_parse(data: bytes, range_size: int, chunk: int) -> ParsedRange:
    chunks = (data[i : i + chunk] for i in range(0, len(data), chunk))
    index = index_boundaries(chunks, len(data), range_size, DIALECT)
    parts = [
        parse_records(
            data[r.start : r.end],
            header=index.header or b"",
            dialect=DIALECT,
            first_line=r.first_line,
            base_offset=r.start,
        )
        for r in index.ranges
    ]
    hashes = [h for p in parts for h in p.content_hashes.to_pylist()]
    tables = [p.table for p in parts]
    return ParsedRange(
        pa.concat_tables(tables) if tables else parse(data).table,
        pa.chunked_array([pa.array(hashes, type=pa.string())]),
        np.concatenate([p.line_numbers for p in parts]) if parts else np.empty(0, np.int64),
        np.concatenate([p.byte_offsets for p in parts]) if parts else np.empty(0, np.int64),
        [r for p in parts for r in p.rejected],
        sum(p.blank_lines for p in parts),
    )


class TestRangesAgreeWithTheWhole:
    @pytest.mark.parametrize("seed", range(40))
    def test_any_split_gives_the_records_of_one_range(self, seed: int) -> None:
        rng = random.Random(seed)
        data = random_csv(rng, dirty=seed % 2 == 1)
        whole = parse(data)
        for range_size in (1, 2, 3, 5, 8, 13, 40, 1000):
            split = ranges_parse(data, range_size, rng.randint(1, 50))
            assert rows(split) == rows(whole)
            assert lineage(split) == lineage(whole)
            assert split.rejected == whole.rejected
            assert split.blank_lines == whole.blank_lines

    @pytest.mark.parametrize("seed", range(20))
    def test_a_view_of_the_bytes_parses_as_the_bytes(self, seed: int) -> None:
        # A span hands the parser a view of what it fetched (no copy): same rows, lineage,
        # rejects (their raw bytes as bytes) and blank lines, on clean and dirty data.
        data = random_csv(random.Random(seed), dirty=seed % 2 == 1)
        header = split_header(data, DIALECT)
        fetched = b"padding" + data + b"tail"
        results = [
            parse_records(
                body,
                header=list(header.names),
                dialect=DIALECT,
                first_line=header.first_line,
                base_offset=header.end,
                block_size=64,
            )
            for body in (
                data[header.end :],
                memoryview(fetched)[7 + header.end : 7 + len(data)],
            )
        ]
        plain, view = results
        assert rows(view) == rows(plain) and lineage(view) == lineage(plain)
        assert view.rejected == plain.rejected and view.blank_lines == plain.blank_lines
        assert all(type(r.raw) is bytes for r in view.rejected)
        for viewed in (memoryview(UTF8_BOM + b"1,2\n"), memoryview(b"1,2\n")):
            headerless = parse_records(
                viewed,
                header=["a", "b"],
                dialect=CsvDialect(header=False),
                first_line=1,
                base_offset=0,
            )
            assert rows(headerless) == [["1", "2"]]

    @pytest.mark.parametrize("seed", range(20))
    def test_the_slow_path_reads_what_the_fast_path_reads(
        self, seed: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        data = random_csv(random.Random(seed), dirty=seed % 2 == 1)
        fast = parse(data)
        monkeypatch.setattr(records, "parse_block", lambda *args: None)
        slow = parse(data)
        assert rows(slow) == rows(fast) and lineage(slow) == lineage(fast)
        assert (slow.rejected, slow.blank_lines) == (fast.rejected, fast.blank_lines)

    @pytest.mark.parametrize("seed", range(1, 40, 2))
    def test_bisecting_a_refused_block_reads_the_same(
        self, seed: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        data = random_csv(random.Random(seed), dirty=True)
        whole = parse(data)
        monkeypatch.setattr(records, "SLOW_PATH_BYTES", 1)
        bisected = parse(data)
        assert rows(bisected) == rows(whole) and lineage(bisected) == lineage(whole)
        assert (bisected.rejected, bisected.blank_lines) == (whole.rejected, whole.blank_lines)

    @pytest.mark.parametrize("seed", range(40))
    def test_clean_data_matches_the_csv_module(self, seed: int) -> None:
        data = random_csv(random.Random(seed), dirty=False)
        text = data.decode()
        reader = csv.reader(io.StringIO(text, newline=""))
        expected, lines, line = [], [], 1
        for row in reader:
            if row not in ([], [""]):
                expected.append(row)
                lines.append(line)
            line = reader.line_num + 1
        result = parse(data, block_size=64)
        assert rows(result) == expected[1:]
        assert result.line_numbers.tolist() == lines[1:]
        assert not result.rejected
