"""Profile one S3/CSV range in this process and print where the time goes.

Starts a private Redis and moto S3 server (``ingest.devstack``), uploads a generated CSV,
plans the import exactly as the ``ingest.s3.scan`` task does and runs the first range through
``RangeProcessor.process`` (the body of the ``ingest.s3.range`` task) under a profiler:
pyinstrument when it is installed (``.venv/bin/pip install pyinstrument``; it is not a project
dependency), cProfile otherwise. Examples::

    .venv/bin/python loadtests/profile_range.py --rows 300000 --range-size 33554432
    .venv/bin/python loadtests/profile_range.py --no-dedup --html /tmp/range.html

Running in-process, without Celery, keeps the profile to the range's own work: S3 read,
boundary scan, parse, validation, hashing, dedup claims, provenance and the sink write.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest.config import load_settings  # noqa: E402
from ingest.devstack import MotoServer, RedisServer  # noqa: E402

__all__ = ["main"]

BUCKET = "profile"


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
        plan = plan_import(settings, rt.s3, rt.schemas, request, "profile-1", "profile")
        spec = plan.ranges[0]
        size = spec.end - spec.start
        print(
            f"{len(plan.ranges)} ranges planned; profiling range 0: {size / 1e6:.1f} MB "
            f"of {csv_path.stat().st_size / 1e6:.1f} MB, dedup {'off' if args.no_dedup else 'on'}"
        )
        processor = RangeProcessor(settings, rt.s3, rt.sink, rt.schemas, rt.dedup, rt.dlq, rt.redis)
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
