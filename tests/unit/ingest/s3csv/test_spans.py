"""Spans that find their own records give the ranges the whole-object pre-pass gave."""

from __future__ import annotations

import random

import numpy as np
import pytest

from ingest.s3csv import spans as spans_module
from ingest.s3csv.ranges import CsvDialect, index_boundaries, scan_newlines
from ingest.s3csv.spans import OwnRecords, read_own_records

DIALECT = CsvDialect()


class Ledger:
    """The ledger's contract in memory: counts published per span index."""

    def __init__(self) -> None:
        self.counts: dict[int, tuple[int, int]] = {}

    def publish(self, index: int, newlines: int, quotes: int) -> None:
        self.counts[index] = (newlines, quotes)

    def known(self, below: int) -> dict[int, tuple[int, int]]:
        return {i: c for i, c in self.counts.items() if i < below}


def csv_bytes(rng: random.Random, rows: int, crlf: bool = False) -> bytes:
    ending = "\r\n" if crlf else "\n"
    lines = ["id,name,notes"]
    for n in range(rows):
        roll = rng.random()
        if roll < 0.2:
            notes = '"line one\nline two, ""quoted""\n"'
        elif roll < 0.3:
            notes = '"' + "x" * rng.randint(0, 300) + '"'
        elif roll < 0.35:
            notes = ""
        else:
            notes = "plain"
        lines.append(f"e{n},name {n},{notes}")
    return (ending.join(lines) + (ending if rng.random() < 0.7 else "")).encode()


def own_spans(data: bytes, span: int, order: list[int], ledger: Ledger) -> list[OwnRecords]:
    header_end = data.index(b"\n") + 1
    reads: list[tuple[int, int]] = []

    def read(start: int, end: int) -> bytes:
        reads.append((start, end))
        return data[start:end]

    count = -(-len(data) // span)
    got = {}
    for index in order[:count] if order else range(count):
        got[index] = read_own_records(
            read,
            ledger,  # type: ignore[arg-type]
            index=index,
            span=span,
            object_size=len(data),
            body_start=header_end,
            body_first_line=2,
            quotechar='"',
            wait=0,
        )
    return [got[i] for i in range(count)]


def assert_scan_is_the_parsers(own: OwnRecords) -> None:
    """The scan handed to the parser is the one it would make of the span's bytes."""
    if own.scan is None:
        return
    fresh = scan_newlines(own.data, ord('"'), keep_quotes=True)
    assert fresh.quotes is not None and own.scan.quotes is not None
    for name in ("newlines", "record_ends", "quotes"):
        assert np.array_equal(getattr(own.scan, name), getattr(fresh, name)), name
    assert own.scan.parity == fresh.parity


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("overlap", [3, 64 << 10])
def test_spans_match_the_pre_pass(seed: int, overlap: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # A small overlap makes spans read on past it to find their last record's end.
    monkeypatch.setattr(spans_module, "OVERLAP", overlap)
    rng = random.Random(seed)
    data = csv_bytes(rng, 400, crlf=seed % 2 == 1)
    for span in (50, 97, 256, 1000, 4096):
        count = -(-len(data) // span)
        order = list(range(count))
        if seed % 3 == 0:
            rng.shuffle(order)  # predecessors missing: counted by the span itself
        spans = own_spans(data, span, order, Ledger())
        expected = index_boundaries([data], len(data), span, DIALECT)
        non_empty = [s for s in spans if s.data]
        assert [(s.offset, s.offset + len(s.data)) for s in non_empty] == [
            (r.start, r.end) for r in expected.ranges
        ]
        assert [s.first_line for s in non_empty] == [r.first_line for r in expected.ranges]
        assert b"".join(s.data for s in spans) == data[data.index(b"\n") + 1 :]
        for own in spans:
            assert_scan_is_the_parsers(own)


def test_a_quoted_field_longer_than_a_span_stays_whole() -> None:
    body = b'1,"' + b"a\n" * 500 + b'"\n2,x\n'
    data = b"id,v\n" + body
    spans = own_spans(data, 64, [], Ledger())
    non_empty = [s for s in spans if s.data]
    assert bytes(non_empty[0].data).startswith(b'1,"a')
    assert b"".join(s.data for s in spans) == body
    assert [s.first_line for s in non_empty] == [
        r.first_line for r in index_boundaries([data], len(data), 64, DIALECT).ranges
    ]
