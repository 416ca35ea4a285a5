"""Profile one S3/CSV range in this process and print where the time goes.

Starts a private Redis and moto S3 server (``devstack``), uploads a generated CSV,
plans the import exactly as the ``ingest.s3.scan`` task does and runs the first range through
``RangeProcessor.process`` (the body of the ``ingest.s3.range`` task) under a profiler:
pyinstrument when it is installed (``.venv/bin/pip install pyinstrument``; it is not a project
dependency), cProfile otherwise. Examples::

    .venv/bin/python loadtests/profile_range.py --rows 300000 --range-size 33554432
    .venv/bin/python loadtests/profile_range.py --no-dedup --html /tmp/range.html
    .venv/bin/python loadtests/profile_range.py --stages --repeat 5
    .venv/bin/python loadtests/profile_range.py --csv big.csv --stages --parquet-columns

Running in-process, without Celery, keeps the profile to the range's own work: S3 read,
boundary scan, parse, validation, hashing, dedup claims, provenance and the sink write.

``--stages`` runs the range without a profiler, ``--repeat`` times (Redis flushed and a fresh
range id each time), and prints the CPU milliseconds per MB of each step (this process's
``time.process_time``, so other load on the machine barely moves it) plus the CPU the Redis
and moto servers spent for it: on a 2-core node their cycles come out of the same budget.
It then parses the same bytes with pyarrow's ``read_csv`` (one thread), the ceiling the
import is compared with, and with ``--parquet-columns`` prints what each stored column
costs the Parquet write.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack import MotoServer, RedisServer, cpu_seconds  # noqa: E402
from ingest.config import load_settings  # noqa: E402
from loadtests.range_ceilings import parquet_columns, pyarrow_ceiling  # noqa: E402

__all__ = ["main"]

BUCKET = "profile"


class StageRun:
    """CPU seconds by step of one run of a range; nested steps are taken out of their parent."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.faults: dict[str, int] = {}  # minor page faults by step (children taken out)
        self.external: dict[str, float] = {}
        self._stack: list[list[float]] = []  # [start, time spent in children]
        self.total = 0.0
        self.wall = 0.0
        self.page_faults = 0  # minor faults: fresh pages the kernel had to map (and zero)

    def add_external(self, name: str, seconds: float) -> None:
        self.external[name] = seconds

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        self._stack.append([time.process_time(), 0.0, _minor_faults(), 0])
        try:
            yield
        finally:
            start, children, faults, child_faults = self._stack.pop()
            spent = time.process_time() - start
            faulted = _minor_faults() - int(faults)
            self.seconds[name] = self.seconds.get(name, 0.0) + spent - children
            self.faults[name] = self.faults.get(name, 0) + faulted - int(child_faults)
            if self._stack:
                self._stack[-1][1] += spent
                self._stack[-1][3] += faulted


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class StageTimer:
    """Wraps the functions a range runs through so that each call is charged to its step.

    Patching module attributes (not editing the pipeline) keeps the production code free of
    timing hooks; the names patched are the ones the pipeline looks up at call time.
    """

    def __init__(self) -> None:
        self.current: StageRun | None = None

    @classmethod
    def for_range_processor(cls, processor: Any) -> StageTimer:
        import ingest.s3csv.pipeline as pipeline
        import ingest.s3csv.records as records
        from ingest.schemas.model import CsvSchema

        timer = cls()
        # One step at a time: dedup claims on their own thread would be charged to hashing.
        processor.overlap_claims = False
        timer.patch(pipeline, "read_range", "s3 read")
        timer.patch(pipeline, "parse_records", "scan + parse (other)")
        # Older versions hashed to bytes and formatted hex later: charge either to hashing.
        for name in ("record_hex_digests", "record_digests", "hex_digests"):
            timer.patch(records, name, "row hashing")
        timer.patch(records, "parse_block", "pyarrow parse")
        timer.patch(CsvSchema, "validate", "validation")
        timer.patch(CsvSchema, "validate_table", "validation")
        timer.patch(processor, "_dead_letter_rows", "dead letters")
        timer.patch(processor, "_dedup", "dedup")
        timer.patch(processor, "_output_table", "provenance + output table")
        timer.patch(processor.sink, "write_table", "parquet write")
        timer.patch(pipeline, "read_own_records", "span boundaries + counts")
        timer.patch(processor, "_stored_summary", "bookkeeping (summaries, marks)")
        timer.patch(processor, "_save_summary", "bookkeeping (summaries, marks)")
        if processor.dedup is not None:
            timer.patch(processor.dedup, "forget_owner", "bookkeeping (summaries, marks)")
        return timer

    def patch(self, owner: Any, name: str, step: str) -> None:
        """Charge calls of ``owner.name`` to ``step``; a name ``owner`` lacks is skipped."""
        original: Callable[..., Any] | None = getattr(owner, name, None)
        if original is None:
            return

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self.current is None:
                return original(*args, **kwargs)
            with self.current.step(step):
                return original(*args, **kwargs)

        setattr(owner, name, timed)

    @contextlib.contextmanager
    def run(self) -> Iterator[StageRun]:
        self.current = StageRun()
        started, wall = time.process_time(), time.perf_counter()
        try:
            yield self.current
        finally:
            self.current.total = time.process_time() - started
            self.current.wall = time.perf_counter() - wall
            self.current = None

    @staticmethod
    def report(runs: list[StageRun], size: int) -> str:
        """Median CPU ms per MB of each step over ``runs``."""
        mb = size / 1e6
        names = list(dict.fromkeys(n for run in runs for n in run.seconds))
        lines = [
            f"CPU ms per MB, median of {len(runs)} runs of a {mb:.1f} MB range "
            "(and minor page faults per MB):"
        ]

        def row(label: str, values: list[float], faults: list[int] | None = None) -> None:
            line = f"  {label:<28} {statistics.median(values) * 1e3 / mb:7.2f}"
            if faults is not None:
                line += f"  {statistics.median(faults) / mb:7.0f}"
            lines.append(line)

        for name in names:
            row(
                name,
                [run.seconds.get(name, 0.0) for run in runs],
                [run.faults.get(name, 0) for run in runs],
            )
        row("other (pipeline glue)", [run.total - sum(run.seconds.values()) for run in runs])
        row("= this process", [run.total for run in runs])
        for name in dict.fromkeys(n for run in runs for n in run.external):
            row(f"+ {name} server", [run.external.get(name, 0.0) for run in runs])
        row(
            "= all processes",
            [run.total + sum(run.external.values()) for run in runs],
        )
        faults = statistics.median(run.page_faults for run in runs)
        lines.append(f"  minor page faults per MB     {faults / mb:7.0f}  (this process)")
        wall = statistics.median(run.wall for run in runs)
        lines.append(f"  wall: {wall:.2f} s = {mb / wall:.1f} MB/s for one process")
        return "\n".join(lines)


def _csv(rows: int, work: Path) -> Path:
    path = work / "input.csv"
    subprocess.run(
        [sys.executable, str(ROOT / "loadtests" / "gen_csv.py"), str(path), "--rows", str(rows)],
        check=True,
        timeout=900,
    )
    return path


def _profile(run: Any, html: Path | None) -> None:
    """Run ``run()`` under pyinstrument if available, else cProfile; print the report."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        Profiler = None
    if Profiler is not None:
        profiler = Profiler(interval=0.001)
        profiler.start()
        run()
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
        if html is not None:
            html.write_text(profiler.output_html())
            print(f"HTML profile: {html}")
        return
    print("pyinstrument is not installed: cProfile, top 30 by cumulative time")
    profile = cProfile.Profile()
    profile.enable()
    run()
    profile.disable()
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out).strip_dirs().sort_stats("cumulative")
    stats.print_stats(30)
    print(out.getvalue())
    out = io.StringIO()
    pstats.Stats(profile, stream=out).strip_dirs().sort_stats("tottime").print_stats(15)
    print("top 15 by own time\n" + out.getvalue())


def _stages(
    processor: Any,
    spec: Any,
    size: int,
    repeat: int,
    client: Any,
    servers: dict[str, int],
    by_column: bool = False,
) -> None:
    """Run the range ``repeat`` times under a :class:`StageTimer`; print the median ms/MB."""
    timer = StageTimer.for_range_processor(processor)
    written: list[Any] = []
    write_table = processor.sink.write_table

    def keep_table(name: str, table: Any) -> Any:
        written[:] = [table]
        return write_table(name, table)

    processor.sink.write_table = keep_table
    runs = []
    for attempt in range(repeat):
        client.flushdb()
        fresh = spec.model_copy(update={"rangeId": f"{spec.rangeId[:30]}-stage{attempt}"})
        before = {name: cpu_seconds(pid) for name, pid in servers.items()}
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        with timer.run() as run:
            summary = processor.process(fresh)
        run.page_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        for name, pid in servers.items():
            run.add_external(name, cpu_seconds(pid) - before[name])
        runs.append(run)
    print(f"summary of the last run: {summary.model_dump()}")
    print(StageTimer.report(runs, size))
    from ingest.s3csv.reader import read_range

    data = read_range(processor.s3, spec.bucket, spec.key, spec.start, spec.end, spec.etag)
    cpu, rate = pyarrow_ceiling(data, repeat)
    body = statistics.median(run.total for run in runs) * 1e3 / (size / 1e6)
    print(
        f"pyarrow read_csv of the same bytes: {cpu:.2f} ms/MB on one thread, "
        f"{rate:.0f} MB/s threaded; the range costs {body / cpu:.2f} times its parse"
    )
    if by_column and written:
        print(parquet_columns(written[0], size, repeat))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=300_000, help="CSV rows (~120 bytes each)")
    parser.add_argument("--csv", type=Path, default=None, help="an existing CSV instead")
    parser.add_argument("--range-size", type=int, default=32 << 20)
    parser.add_argument("--schema", default="events_wide")
    parser.add_argument("--no-dedup", action="store_true")
    parser.add_argument("--html", type=Path, default=None, help="also write pyinstrument HTML")
    parser.add_argument("--stages", action="store_true", help="CPU ms/MB per step, no profiler")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the range with --stages")
    parser.add_argument(
        "--parquet-columns",
        action="store_true",
        help="with --stages: also the Parquet write's CPU and bytes per stored column",
    )
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="profile-range-"))
    redis_server = RedisServer(work / "redis").start()
    s3 = MotoServer(log_path=work / "s3.log").start()
    try:
        env = dict(
            os.environ,
            INGEST_REDIS_URL=redis_server.url,
            INGEST_S3_ENDPOINT_URL=s3.url,
            INGEST_SINK_URI=f"file://{work / 'sink'}",
            INGEST_S3CSV__RANGE_SIZE=str(args.range_size),
            INGEST_S3CSV__DEDUPLICATION__ENABLED="false" if args.no_dedup else "true",
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
        )
        os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
        settings = load_settings(env)
        from ingest.runtime import Runtime
        from ingest.s3csv.imports import ImportRequest
        from ingest.s3csv.pipeline import RangeProcessor
        from ingest.s3csv.planning import plan_import

        rt = Runtime(settings)
        csv_path = args.csv or _csv(args.rows, work)
        rt.s3.create_bucket(Bucket=BUCKET)
        rt.s3.upload_file(str(csv_path), BUCKET, "data/input.csv")
        request = ImportRequest.model_validate(
            {"uri": f"s3://{BUCKET}/data/", "schema": args.schema, "purpose": "profile"}
        )
        wall, cpu, moto_cpu = time.perf_counter(), time.process_time(), cpu_seconds(s3.pid)
        plan = plan_import(settings, rt.s3, rt.schemas, request, "profile-1", "profile")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        moto_cpu = cpu_seconds(s3.pid) - moto_cpu
        total_mb = csv_path.stat().st_size / 1e6
        # The scan task's pre-pass reads every object once, serially: one import's ceiling.
        print(
            f"planning: {total_mb:.1f} MB in {wall:.2f} s = {total_mb / wall:.0f} MB/s "
            f"(CPU {cpu / total_mb * 1e3:.1f} ms/MB here, {moto_cpu / total_mb * 1e3:.1f} moto)"
        )
        spec = plan.ranges[0]
        size = spec.end - spec.start
        print(
            f"{len(plan.ranges)} ranges planned; profiling range 0: {size / 1e6:.1f} MB "
            f"of {csv_path.stat().st_size / 1e6:.1f} MB, dedup {'off' if args.no_dedup else 'on'}"
        )
        processor = RangeProcessor(settings, rt.s3, rt.sink, rt.schemas, rt.dedup, rt.dlq, rt.redis)
        if args.stages:
            servers = {"redis-server": redis_server.pid, "moto": s3.pid}
            _stages(processor, spec, size, args.repeat, rt.redis, servers, args.parquet_columns)
            return 0
        result: dict[str, Any] = {}

        def run() -> None:
            started = time.perf_counter()
            result["summary"] = processor.process(spec)
            result["seconds"] = time.perf_counter() - started

        _profile(run, args.html)
        seconds = result["seconds"]
        print(f"summary: {result['summary'].model_dump()}")
        print(f"range: {size / 1e6:.1f} MB in {seconds:.2f} s = {size / 1e6 / seconds:.1f} MB/s")
        print("(under a profiler: compare the shares of the steps, not the absolute rate)")
        return 0
    finally:
        s3.stop()
        redis_server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
