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
``COUNT_WAIT`` seconds (its task is waiting for a retry, or its worker died), the span reads
that span's bytes itself (the same ranged GET that span makes), counts and publishes them:
slower, never wrong, never stuck.

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

import numpy as np
import redis

from ingest.s3csv.ranges import NewlineScan, scan_newlines

__all__ = ["COUNT_WAIT", "OVERLAP", "OwnRecords", "SpanLedger", "read_own_records"]

# Bytes read past a span's end to find where its last record ends; more only when needed.
OVERLAP = 64 << 10
# How long a span waits for its predecessors' counts before counting their bytes itself.
COUNT_WAIT = 10.0
COUNT_POLL = 0.02
LEDGER_TTL = 7 * 86400
LF = b"\n"

Reader = Callable[[int, int], bytes]  # (start, end) -> the object's bytes [start, end)


@dataclass(frozen=True)
class OwnRecords:
    """The records of one span: their bytes, offset in the object and first line number,
    and the newline scan of those bytes when it was made here (None: not made)."""

    data: bytes | memoryview  # a view of the fetched bytes, not a copy of tens of MB
    offset: int
    first_line: int
    scan: NewlineScan | None = None


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


def _window(index: int, span: int, object_size: int) -> tuple[int, int, int, int]:
    """What span ``index`` reads (``begin``, ``fetched``) and owns (``nominal``, ``stop``)."""
    nominal = index * span
    stop = min(object_size, nominal + span)
    begin = 0 if index == 0 else nominal - 1  # one byte before: is the span's start a boundary?
    return begin, min(object_size, stop + OVERLAP), nominal, stop


def _count(read: Reader, index: int, span: int, object_size: int, quote: bytes) -> tuple[int, int]:
    """Newlines and quotes of span ``index``, read as that span reads its bytes."""
    begin, fetched, nominal, stop = _window(index, span, object_size)
    data = read(begin, fetched)
    return data.count(LF, nominal - begin, stop - begin), data.count(
        quote, nominal - begin, stop - begin
    )


def _prefix(
    ledger: SpanLedger,
    index: int,
    span: int,
    object_size: int,
    read: Reader,
    quote: bytes,
    wait: float,
) -> tuple[int, int]:
    """Newlines and quotes before span ``index``: published counts, or counted here."""
    deadline = time.monotonic() + wait
    known = ledger.known(index)
    while len(known) < index and time.monotonic() < deadline:
        time.sleep(COUNT_POLL)
        known = ledger.known(index)
    for missing in sorted(set(range(index)) - set(known)):
        counts = _count(read, missing, span, object_size, quote)
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
    (span 0 starts there). Publishes this span's counts before anything else can fail. The
    one scan of the bytes that finds the newlines and quotes also serves the parser
    (``OwnRecords.scan``), which would otherwise scan the same bytes again.
    """
    quote = quotechar.encode("ascii")
    begin, fetched, nominal, stop = _window(index, span, object_size)
    data = read(begin, fetched)
    own_from, own_to = nominal - begin, stop - begin
    found = scan_newlines(data, quote[0], keep_quotes=True)  # positions; parity comes later
    lfs, quotes = found.newlines, found.quotes
    assert quotes is not None
    own_quotes = _between(quotes, own_from, own_to)
    ledger.publish(index, _between(lfs, own_from, own_to), own_quotes)
    if index == 0:
        lines_before, quotes_before = 0, 0
    else:
        lines_before, quotes_before = _prefix(ledger, index, span, object_size, read, quote, wait)
        # Counts up to ``nominal``; the fetched data starts one byte earlier.
        lines_before -= data[0] == LF[0]
        quotes_before -= data[0] == quote[0]
    # An LF ends a record when the quotes before it, in the whole object, are even.
    ends = lfs[((np.searchsorted(quotes, lfs) + quotes_before) & 1) == 0]
    # Span 0 starts after the header; another span after its first record-ending LF.
    after_first_end = int(ends[0]) + 1 if len(ends) else len(data)
    first = body_start - begin if index == 0 else after_first_end
    if begin + first >= stop:  # no record starts in this span (one long quoted field)
        return OwnRecords(b"", begin + first, 0)
    # Span 0 starts after the header, at the line the planner found.
    first_line = body_first_line if index == 0 else lines_before + _between(lfs, 0, first) + 1
    # Where the last record ends: the first record boundary at or after ``stop``.
    last = own_to - 1
    after = int(np.searchsorted(ends, last))
    if after < len(ends) or fetched == object_size:
        finish = int(ends[after]) + 1 if after < len(ends) else len(data)
        own = memoryview(data)[first:finish]
        return OwnRecords(own, begin + first, first_line, _shifted(found, ends, first, finish))
    # The last record runs past what was fetched: read on until it ends.
    tail_parity = (quotes_before + _between(quotes, 0, last)) & 1
    end = None
    while end is None and fetched < object_size:
        more = read(fetched, min(object_size, fetched + 4 * OVERLAP))
        tail_parity = (tail_parity + data.count(quote, last)) & 1
        last = len(data)
        data += more
        fetched += len(more)
        end = _first_record_end(data, last, tail_parity, quote[0])
    finish = len(data) if end is None else end + 1
    return OwnRecords(data[first:finish], begin + first, first_line)


def _between(positions: np.ndarray, low: int, high: int) -> int:
    """How many of the sorted ``positions`` are in ``[low, high)``."""
    return int(np.searchsorted(positions, high) - np.searchsorted(positions, low))


def _shifted(found: NewlineScan, ends: np.ndarray, first: int, finish: int) -> NewlineScan:
    """The scan of ``data[first:finish]``, which starts at a record boundary (even parity)."""

    def part(positions: np.ndarray) -> np.ndarray:
        low, high = np.searchsorted(positions, [first, finish])
        return positions[low:high] - first

    assert found.quotes is not None
    quotes = part(found.quotes)
    return NewlineScan(part(found.newlines), part(ends), len(quotes) & 1, quotes)
