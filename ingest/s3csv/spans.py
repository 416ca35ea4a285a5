"""Ranges that find their own records: every byte of an object is fetched from S3 once.

The planner cuts a large object into nominal spans of ``rangeSize`` bytes without reading
it (only the header, a few KiB). Span *i* owns the records that *start* in
``[i * size, (i + 1) * size)``, the same partition the old pre-pass produced. To find them
it needs two numbers about everything before it: the quote parity (is its first byte inside
a quoted field?) and the number of newlines (the line number of its first record). Each
span task counts both over its own span as soon as its bytes arrive and publishes them in
Redis (:class:`SpanLedger`); span *i* adds up the counts of spans ``0..i-1``. Spans run in
order and publish before any other work, so the counts a span needs are there, or arrive
within moments, from the spans running beside it. If one has not arrived within
``COUNT_WAIT`` seconds (its task is waiting for a retry, or its worker died), the span counts
that span's bytes itself, streaming, and publishes them: slower, never wrong, never stuck.

Counts are a property of the object's bytes, so the ledger is keyed by the object version
(bucket, key, ETag) and the span size, and a re-run or another import of the same object
reuses them. With the parity known, boundaries are exact, not guessed: a quoted newline
across a span edge is never cut in two, and line numbers are those of the whole object.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from ingest.s3csv.ranges import scan_newlines

__all__ = ["COUNT_WAIT", "OVERLAP", "OwnRecords", "SpanLedger", "read_own_records"]

# Bytes read past a span's end to find where its last record ends; more only when needed.
OVERLAP = 64 << 10
# How long a span waits for its predecessors' counts before counting their bytes itself.
COUNT_WAIT = 10.0
COUNT_POLL = 0.02
COUNT_PIECE = 8 << 20
LEDGER_TTL = 7 * 86400
LF = b"\n"

Reader = Callable[[int, int], bytes]  # (start, end) -> the object's bytes [start, end)


@dataclass(frozen=True)
class OwnRecords:
    """The records of one span: their bytes, offset in the object and first line number."""

    data: bytes
    offset: int
    first_line: int


class SpanLedger:
    """Newline and quote counts per span of one object version, shared through Redis."""

    def __init__(
        self, client: redis.Redis, bucket: str, key: str, etag: str | None, span: int
    ) -> None:
        identity = hashlib.sha256(f"{bucket}\x00{key}\x00{etag}\x00{span}".encode()).hexdigest()
        self.client = client
        self.key = f"ingest:s3spans:{identity[:40]}"

    def publish(self, index: int, newlines: int, quotes: int) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(self.key, str(index), f"{newlines},{quotes}")
            pipe.expire(self.key, LEDGER_TTL)
            pipe.execute()

    def known(self, below: int) -> dict[int, tuple[int, int]]:
        """The counts published so far for spans ``0..below-1``."""
        raw = self.client.hmget(self.key, [str(i) for i in range(below)]) if below else []
        out = {}
        for index, value in enumerate(raw):
            if value is not None:
                newlines, quotes = value.decode().split(",")
                out[index] = (int(newlines), int(quotes))
        return out


def _count(read: Reader, start: int, end: int, quote: bytes) -> tuple[int, int]:
    """Newlines and quotes in ``[start, end)``, read in bounded pieces."""
    newlines = quotes = 0
    for piece_start in range(start, end, COUNT_PIECE):
        piece = read(piece_start, min(end, piece_start + COUNT_PIECE))
        newlines += piece.count(LF)
        quotes += piece.count(quote)
    return newlines, quotes


def _prefix(
    ledger: SpanLedger, index: int, span: int, read: Reader, quote: bytes, wait: float
) -> tuple[int, int]:
    """Newlines and quotes before span ``index``: published counts, or counted here."""
    deadline = time.monotonic() + wait
    known = ledger.known(index)
    while len(known) < index and time.monotonic() < deadline:
        time.sleep(COUNT_POLL)
        known = ledger.known(index)
    for missing in sorted(set(range(index)) - set(known)):
        counts = _count(read, missing * span, (missing + 1) * span, quote)
        ledger.publish(missing, *counts)
        known[missing] = counts
    return sum(n for n, _ in known.values()), sum(q for _, q in known.values())


def _first_record_end(data: bytes, start: int, parity: int, quote: int) -> int | None:
    """The position of the first LF outside quotes at or after ``start``, or None."""
    size = 64 << 10
    while True:
        piece = memoryview(data)[start : start + size]
        ends = scan_newlines(piece, quote, parity).record_ends
        if len(ends):
            return start + int(ends[0])
        if start + size >= len(data):
            return None
        size *= 4


def read_own_records(
    read: Reader,
    ledger: SpanLedger,
    *,
    index: int,
    span: int,
    object_size: int,
    body_start: int,
    body_first_line: int,
    quotechar: str,
    wait: float = COUNT_WAIT,
) -> OwnRecords:
    """Fetch span ``index`` once (plus a little past its end) and return its own records.

    ``body_start`` and ``body_first_line`` are where the records after the header start
    (span 0 starts there). Publishes this span's counts before anything else can fail.
    """
    quote = quotechar.encode("ascii")
    nominal = index * span
    stop = min(object_size, nominal + span)
    begin = 0 if index == 0 else nominal - 1  # one byte before: is the span's start a boundary?
    fetched = min(object_size, stop + OVERLAP)
    data = read(begin, fetched)
    own_from = nominal - begin
    own_quotes = data.count(quote, own_from, stop - begin)
    ledger.publish(index, data.count(LF, own_from, stop - begin), own_quotes)
    if index == 0:
        lines_before, quotes_before = 0, 0
    else:
        lines_before, quotes_before = _prefix(ledger, index, span, read, quote, wait)
        # Counts up to ``nominal``; the fetched data starts one byte earlier.
        lines_before -= data[0] == LF[0]
        quotes_before -= data[0] == quote[0]
    parity = quotes_before & 1
    if index == 0:
        first = body_start - begin
    else:
        end = _first_record_end(data, 0, parity, quote[0])
        first = len(data) if end is None else end + 1
    if begin + first >= stop:  # no record starts in this span (one long quoted field)
        return OwnRecords(b"", begin + first, 0)
    # Where the last record ends: the first record boundary at or after ``stop``.
    last = stop - 1 - begin
    # Quotes in data[:last], from the span's own count: no third pass over the bytes.
    before_last = (own_from and data[0] == quote[0]) + own_quotes - (data[last] == quote[0])
    tail_parity = (quotes_before + before_last) & 1
    end = _first_record_end(data, last, tail_parity, quote[0])
    while end is None and fetched < object_size:
        more = read(fetched, min(object_size, fetched + 4 * OVERLAP))
        tail_parity = (tail_parity + data.count(quote, last)) & 1
        last = len(data)
        data += more
        fetched += len(more)
        end = _first_record_end(data, last, tail_parity, quote[0])
    finish = len(data) if end is None else end + 1
    # Span 0 starts after the header, at the line the planner found.
    first_line = body_first_line if index == 0 else lines_before + data.count(LF, 0, first) + 1
    return OwnRecords(data[first:finish], begin + first, first_line)
