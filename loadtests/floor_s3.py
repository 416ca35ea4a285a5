"""The least CPU an S3/CSV import can cost per MB here: the steps no design can skip, alone.

An import must at least fetch the bytes from S3, parse the CSV, hash every row (contentHash)
and write the rows to the sink. This measures each of those steps on its own, with the
fastest code the project has for it and nothing else (no validation, dedup, provenance,
Celery or bookkeeping), on 32 MB ranges of a generated CSV (``loadtests/gen_csv.py``):

- ``s3 get``: ranged ``get_object`` from moto's server (a separate process, as in the
  benchmark); the client's CPU and the server's (read from ``/proc``) are shown apart. moto
  copies the whole object to answer any GET, so its share grows with the object (each of
  the N ranges of an object pays for all of it); a line shows what one 8 MB ranged GET
  costs it from a 16 MB and from a 256 MB object;
- ``parse``: ``pyarrow.csv.read_csv`` with threads, every column as text (as the pipeline
  reads), then the same with inferred types for comparison;
- ``hash``: ``ingest.s3csv.digests.record_hex_digests``, SHA-256 of every row's bytes;
- ``parquet``: the file sink's ``write_parquet`` (zstd level 1) of the parsed table.

CPU is ``time.process_time`` (every thread of this process), so other jobs on a shared
machine barely move it. The sum, spread over every core with nothing lost to scheduling,
gives the highest MB/s any import on this machine can reach. Example::

    .venv/bin/python loadtests/floor_s3.py --rows 600000 --repeat 3
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack import MotoServer, cpu_seconds, local_s3_client  # noqa: E402

__all__ = ["main"]

RANGE = 32 << 20


def _cpu(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.process_time()
    result = fn()
    return time.process_time() - started, result


def _ranges(data: bytes) -> list[tuple[int, int]]:
    """Line-aligned 32 MB spans of ``data`` after its header (generated data: no quoted LF)."""
    spans = []
    start = data.index(b"\n") + 1
    while start < len(data):
        end = data.find(b"\n", min(start + RANGE, len(data) - 1))
        end = len(data) if end < 0 else end + 1
        spans.append((start, end))
        start = end
    return spans


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=600_000, help="CSV rows (~72 MB)")
    parser.add_argument("--repeat", type=int, default=3, help="passes over the file (median)")
    args = parser.parse_args(argv)

    import numpy as np
    import pyarrow as pa
    from pyarrow import csv as pacsv

    from ingest.s3csv.digests import record_hex_digests
    from ingest.sinks.file import write_parquet

    with tempfile.TemporaryDirectory(prefix="floor-s3-") as tmp:
        path = Path(tmp) / "input.csv"
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "loadtests" / "gen_csv.py"),
                str(path),
                "--rows",
                str(args.rows),
                "--newline-rate",
                "0",
            ],
            check=True,
        )
        data = path.read_bytes()
        header = data[: data.index(b"\n") + 1]
        names = header.decode().strip().split(",")
        server = MotoServer(log_path=Path(tmp) / "s3.log").start()
        try:
            s3 = local_s3_client(server.url)
            s3.create_bucket(Bucket="floor")
            s3.upload_file(str(path), "floor", "input.csv")
            # moto keeps an object in one buffer and copies all of it to answer any GET, so
            # a ranged GET costs its server CPU in proportion to the object, not the range.
            per_get: dict[int, float] = {}
            for object_mb in (16, 256):
                s3.put_object(
                    Bucket="floor", Key=f"blob{object_mb}", Body=os.urandom(object_mb << 20)
                )
                before = cpu_seconds(server.pid)
                for _ in range(5):
                    s3.get_object(Bucket="floor", Key=f"blob{object_mb}", Range="bytes=0-8388607")[
                        "Body"
                    ].read()
                per_get[object_mb] = (cpu_seconds(server.pid) - before) / 5 * 1000
                s3.delete_object(Bucket="floor", Key=f"blob{object_mb}")
            steps: dict[str, list[float]] = {}
            for _ in range(args.repeat):
                totals = dict.fromkeys(
                    (
                        "s3 get (client)",
                        "s3 get (moto server)",
                        "parse (text columns)",
                        "hash (SHA-256 per row)",
                        "parquet write (zstd-1)",
                        "parse (inferred types, for comparison)",
                    ),
                    0.0,
                )
                size = 0
                for start, end in _ranges(data):
                    server_before = cpu_seconds(server.pid)
                    cpu, body = _cpu(
                        lambda s=start, e=end: s3.get_object(
                            Bucket="floor", Key="input.csv", Range=f"bytes={s}-{e - 1}"
                        )["Body"].read()
                    )
                    totals["s3 get (client)"] += cpu
                    totals["s3 get (moto server)"] += cpu_seconds(server.pid) - server_before
                    size += len(body)
                    options = pacsv.ConvertOptions(column_types={n: pa.string() for n in names})
                    cpu, table = _cpu(
                        lambda b=body, o=options: pacsv.read_csv(
                            io.BytesIO(header + b), convert_options=o
                        )
                    )
                    totals["parse (text columns)"] += cpu
                    cpu, _ = _cpu(lambda b=body: pacsv.read_csv(io.BytesIO(header + b)))
                    totals["parse (inferred types, for comparison)"] += cpu

                    def hashes(b: bytes = body) -> Any:
                        newlines = np.flatnonzero(np.frombuffer(b, dtype=np.uint8) == 10)
                        starts = np.concatenate(([0], newlines[:-1] + 1))
                        return record_hex_digests(b, starts, newlines, newlines)

                    cpu, digests = _cpu(hashes)
                    assert len(digests) == table.num_rows
                    totals["hash (SHA-256 per row)"] += cpu
                    out = Path(tmp) / "out.parquet"
                    cpu, _ = _cpu(lambda t=table, o=out: write_parquet(t, str(o)))
                    totals["parquet write (zstd-1)"] += cpu
                for name, seconds in totals.items():
                    steps.setdefault(name, []).append(seconds * 1000 / (size / 1e6))
        finally:
            server.stop()
    print(
        f"CPU ms per MB, median of {args.repeat} passes over {size / 1e6:.0f} MB "
        f"in {len(_ranges(data))} ranges of 32 MB:"
    )
    needed = 0.0
    for name, values in steps.items():
        value = statistics.median(values)
        if "comparison" not in name:
            needed += value
        print(f"  {name:42s} {value:6.2f}")
    print(
        "moto server CPU per 8 MB ranged GET: "
        + ", ".join(f"{ms:.0f} ms from a {mb} MB object" for mb, ms in per_get.items())
    )
    cores = os.cpu_count() or 1
    print(f"  {'= the steps no import can skip':42s} {needed:6.2f}")
    print(
        f"highest possible import speed on {cores} cores: {cores * 1000 / needed:.0f} MB/s "
        "(every core busy with these steps only)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
