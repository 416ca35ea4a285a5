"""Cut a stream of CSV bytes (a decompressed object) into record-aligned pieces of bounded size."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ingest.s3csv.ranges import CsvDialect, scan_newlines

__all__ = ["split_stream"]


def split_stream(
    chunks: Iterable[bytes], target: int, dialect: CsvDialect
) -> Iterator[tuple[bytes, int]]:
    """Yield ``(data, offset)`` pieces of whole records, each about ``target`` bytes or more.

    A piece ends at the last record boundary (an LF outside quotes) of the buffered bytes,
    so memory stays near ``target`` plus one chunk whatever the stream's length.
    """
    buffer = bytearray()
    offset = 0
    parity = 0
    scanned = 0  # bytes of ``buffer`` whose quote parity is already folded into ``parity``
    last_end = -1  # last record boundary found in ``buffer``
    for chunk in chunks:
        if not chunk:
            continue
        buffer += chunk
        scan = scan_newlines(memoryview(buffer)[scanned:], dialect.quote_byte, parity)
        if len(scan.record_ends):
            last_end = scanned + int(scan.record_ends[-1])
        parity = scan.parity
        scanned = len(buffer)
        if len(buffer) >= target and last_end >= 0:
            cut = last_end + 1
            yield bytes(buffer[:cut]), offset
            offset += cut
            del buffer[:cut]
            scanned -= cut
            last_end = -1
    if buffer:
        yield bytes(buffer), offset
