"""End-to-end S3/CSV import benchmark: trigger to ``succeeded`` on a local stack.

Starts a Redis, a moto S3 server and one worker node (the Procfile's ``worker`` with
concurrency = cores), uploads a generated CSV (``loadtests/gen_csv.py``), triggers the import
through the same path as ``POST /admin/imports``, and reports MB/s and each worker process's
peak RSS. Example::

    python loadtests/bench_s3_import.py --rows 2000000          # ~250 MB
    python loadtests/bench_s3_import.py --rows 2000000 --no-dedup --range-size 16777216
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest.config import load_settings  # noqa: E402
from ingest.devstack import (  # noqa: E402
    ManagedProcess,
    MotoServer,
    RedisServer,
    cpu_seconds,
    local_s3_client,
    procfile_commands,
    wait_for,
)


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process and its children, the largest one, in MB."""
    best = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    best = max(best, int(line.split()[1]) / 1024)
        except OSError:
            continue
    return best


def busy_cores() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return float(sum(values) - idle), float(sum(values))


def worker_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [pid, *(int(p) for p in children.read_text().split())] if children.exists() else [pid]


def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-s3-"))
    csv_path = work / "input.csv"
    if not csv_path.exists():
        import subprocess

        subprocess.run(
            [
                sys.executable,
                str(ROOT / "loadtests" / "gen_csv.py"),
                str(csv_path),
                "--rows",
                str(args.rows),
            ],
            check=True,
        )
    size = csv_path.stat().st_size
    # Only the input is reused: a fresh Redis and sink, or every range would just resume.
    run_dir = work / time.strftime("run-%Y%m%d-%H%M%S")
    redis_server = RedisServer(run_dir / "redis").start()
    s3 = MotoServer(log_path=run_dir / "s3.log").start()
    env = dict(
        os.environ,
        INGEST_REDIS_URL=redis_server.url,
        INGEST_S3_ENDPOINT_URL=s3.url,
        INGEST_SINK_URI=args.sink or f"file://{run_dir / 'sink'}",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        INGEST_S3CSV__RANGE_SIZE=str(args.range_size),
        INGEST_S3CSV__DEDUPLICATION__ENABLED="false" if args.no_dedup else "true",
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    )
    settings = load_settings(env)
    worker = ManagedProcess(
        "worker",
        [
            "bash",
            "-c",
            "exec "
            + procfile_commands()["worker"]
            + f" -c {args.concurrency} --without-gossip --without-mingle",
        ],
        env=env,
        log_path=run_dir / "worker.log",
        cwd=ROOT,
    ).start()
    try:
        from celery import Celery

        probe = Celery(broker=redis_server.url, backend=redis_server.url)
        wait_for(lambda: probe.control.ping(timeout=0.5), 60, 0.2, "worker")
        client = local_s3_client(s3.url)
        client.create_bucket(Bucket="bench")
        client.upload_file(str(csv_path), "bench", "data/input.csv")
        from ingest.runtime import Runtime
        from ingest.s3csv.imports import ImportStore
        from tasks.imports import submit_import

        rt = Runtime(settings)
        # CPU spent per MB by each part of the stack, and how busy the whole machine was:
        # a figure far from `profile_range.py --stages` means time lost outside the steps.
        parts = {
            "worker": lambda: worker_pids(worker.pid),
            "redis": lambda: [redis_server.pid],
            "s3 server": lambda: [s3.pid],
        }
        cpu_before = {name: cpu_seconds(*pids()) for name, pids in parts.items()}
        machine_before = busy_cores()
        started = time.monotonic()
        import_id = submit_import(
            settings,
            rt.redis,
            rt.schemas,
            {"uri": "s3://bench/data/", "schema": "events_wide", "purpose": "benchmark"},
            "bench",
        )
        store = ImportStore(rt.redis)
        rss = 0.0
        while True:
            state = store.get(import_id) or {}
            rss = max(rss, peak_rss_mb(worker.pid))
            if state.get("status") in ("succeeded", "failed"):
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        cpu_after = {name: cpu_seconds(*pids()) for name, pids in parts.items()}
        machine_after = busy_cores()
        rss = max(rss, max(peak_rss_mb(p) for p in worker_pids(worker.pid)))
        megabytes = size / 1e6
        cpu_ms_per_mb = {
            name: round((cpu_after[name] - cpu_before[name]) * 1000 / megabytes, 1)
            for name in parts
        }
        busy = (machine_after[0] - machine_before[0]) / (machine_after[1] - machine_before[1])
        return {
            "bytes": size,
            "seconds": round(elapsed, 2),
            "MBps": round(size / 1e6 / elapsed, 1),
            "peakRssMBPerProcess": round(rss, 1),
            "status": state["status"],
            "rowsStored": state["rowsStored"],
            "rowsRejected": state["rowsRejected"],
            "duplicates": state["duplicatesDropped"],
            "ranges": state["ranges"]["total"],
            "rangeSize": args.range_size,
            "concurrency": args.concurrency,
            "dedup": not args.no_dedup,
            "cpuMsPerMB": {**cpu_ms_per_mb, "total": round(sum(cpu_ms_per_mb.values()), 1)},
            # Share of the machine's CPU in use while the import ran (any process's).
            "machineBusy": round(busy, 2),
        }
    finally:
        worker.stop()
        s3.stop()
        redis_server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--range-size", type=int, default=32 << 20)
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--no-dedup", action="store_true")
    parser.add_argument("--sink", default=None)
    parser.add_argument("--workdir", default=None, help="reuse a directory (and its input.csv)")
    args = parser.parse_args()
    result = run(args)
    print(json.dumps(result, indent=2))
    return 0 if result["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
