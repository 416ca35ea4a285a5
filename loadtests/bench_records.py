"""Micro-benchmark of the S3 CSV core on one file: boundary index, hashing, parsing, in MB/s.

Usage: ``python loadtests/bench_records.py FILE [--range-size MIB] [--repeat N] [--threads]``.
Make FILE with ``python loadtests/gen_csv.py FILE --rows 2000000``. Every figure is for
one process; without ``--threads`` pyarrow stays on one core too. MB per CPU-second
(all threads' CPU time) is the figure to compare on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa

from ingest.s3csv.arrow_csv import read_strings
from ingest.s3csv.digests import record_digests
from ingest.s3csv.header import split_header
from ingest.s3csv.ranges import CsvDialect, index_boundaries, scan_newlines
from ingest.s3csv.records import _layout, parse_records

__all__ = ["main"]

CHUNK = 8 << 20


def _chunks(data: bytes) -> Iterator[bytes]:
    # Copies, as the bytes of an S3 body stream would be.
    for offset in range(0, len(data), CHUNK):
        yield data[offset : offset + CHUNK]


def _timed(label: str, size: int, repeat: int, run: Callable[[], object]) -> None:
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    wall_mbs = size / statistics.median(walls) / 1e6
    cpu_mbs = size / statistics.median(cpus) / 1e6
    print(
        f"{label:<40} {wall_mbs:6.0f} MB/s wall {cpu_mbs:6.0f} MB/s per CPU-second"
        f"  (best {size / min(walls) / 1e6:.0f} wall, median {statistics.median(walls):.2f} s)"
    )


def main(argv: list[str] | None = None) -> None:
    """Run every step ``--repeat`` times on FILE and print best and median MB/s."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--range-size", type=int, default=32, help="MiB per range")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", action="store_true", help="let pyarrow use every core")
    args = parser.parse_args(argv)
    data = args.file.read_bytes()
    size, dialect, threads = len(data), CsvDialect(), args.threads
    header = split_header(data, dialect)
    body = data[header.end :]
    index = index_boundaries(_chunks(data), size, args.range_size << 20, dialect)
    print(
        f"{args.file}: {size / 1e6:.0f} MB, {len(index.ranges)} ranges of {args.range_size} MiB,"
        f" quoted newlines: {index.quoted_newlines}"
    )

    def parse_ranges() -> None:
        for r in index.ranges:
            parse_records(
                data[r.start : r.end],
                header=index.header or b"",
                dialect=dialect,
                first_line=r.first_line,
                base_offset=r.start,
                use_threads=threads,
            )

    layout = _layout(body, dialect)
    steps: list[tuple[str, Callable[[], object]]] = [
        (
            "index_boundaries (8 MiB chunks)",
            lambda: index_boundaries(_chunks(data), size, args.range_size << 20, dialect),
        ),
        ("  scan_newlines (whole body)", lambda: scan_newlines(body, dialect.quote_byte)),
        (
            "  record_digests (whole body)",
            lambda: record_digests(body, layout.starts, layout.ends, layout.newlines),
        ),
        (
            "  pyarrow read_csv (whole body)",
            lambda: read_strings(pa.py_buffer(body), header.names, dialect, threads),
        ),
        (
            "parse_records (whole body)",
            lambda: parse_records(
                body,
                header=list(header.names),
                dialect=dialect,
                first_line=header.first_line,
                base_offset=header.end,
                use_threads=threads,
            ),
        ),
        (f"parse_records ({args.range_size} MiB ranges)", parse_ranges),
    ]
    for label, run in steps:
        _timed(label, size, args.repeat, run)
    result = parse_records(
        body,
        header=list(header.names),
        dialect=dialect,
        first_line=header.first_line,
        base_offset=header.end,
    )
    print(
        f"rows {result.table.num_rows}, rejected {len(result.rejected)},"
        f" blank lines {result.blank_lines}"
    )


if __name__ == "__main__":
    main()
