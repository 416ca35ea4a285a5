"""Measurements shared by the S3/CSV benchmarks: processes, memory, pyarrow's parse, steps."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

__all__ = [
    "busy_cores",
    "children_of",
    "dedup_memory",
    "peak_rss_mb",
    "pyarrow_parse",
    "stage_report",
]


def children_of(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of one process, in MB; 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def busy_cores() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return float(sum(values) - idle), float(sum(values))


def pyarrow_parse(path: Path, repeat: int = 3) -> dict[str, Any]:
    """pyarrow's own parse of the file's bytes (threads on, newlines in values): the best of
    ``repeat`` runs, wall MB/s and CPU ms per MB of this process."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    data = pa.py_buffer(path.read_bytes())
    megabytes = data.size / 1e6
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(use_threads=True),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
        )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        best = min(best, (wall, cpu))
        rows = table.num_rows
        del table
    return {
        "MBps": round(megabytes / best[0], 1),
        "cpuMsPerMB": round(best[1] * 1e3 / megabytes, 2),
        "rows": rows,
    }


def dedup_memory(redis_url: str, pattern: str = "ingest:dd:*") -> dict[str, int]:
    """The dedup marks' keys and their exact ``MEMORY USAGE`` in bytes, summed."""
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = total = 0
    for key in client.scan_iter(match=pattern, count=1000):
        keys += 1
        total += int(client.memory_usage(key, samples=0) or 0)
    return {"keys": keys, "bytes": total}


def _flush(client: Any) -> None:
    """Empty Redis and wait until it has freed the memory. A plain FLUSHDB after a 2 GB
    import (17.6 M marks) outlasts the client's socket timeout; an asynchronous one must be
    finished before a stage is timed, or its freeing counts as Redis CPU."""
    client.flushdb(asynchronous=True)
    while int(client.info("memory").get("lazyfree_pending_objects", 0)):
        time.sleep(0.05)


def stage_report(
    settings: Any, env: dict[str, str], schema: str, repeat: int, worker_ms_per_mb: float
) -> dict[str, Any]:
    """The first range of the benchmark's object, run again here step by step.

    Uses ``profile_range.py``'s stage timer on the running stack (its Redis is flushed
    between runs: run it after the import's own figures were taken). Returns each step's
    median CPU ms per MB and what the worker spent per MB outside range bodies.
    """
    import os
    import statistics

    from devstack import cpu_seconds
    from ingest.runtime import Runtime
    from ingest.s3csv.imports import ImportRequest
    from ingest.s3csv.pipeline import RangeProcessor
    from ingest.s3csv.planning import plan_import
    from loadtests.profile_range import StageTimer

    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
    rt = Runtime(settings)
    request = ImportRequest.model_validate(
        {"uri": "s3://bench/data/", "schema": schema, "purpose": "stages"}
    )
    spec = plan_import(settings, rt.s3, rt.schemas, request, "stages", "bench").ranges[0]
    processor = RangeProcessor(settings, rt.s3, rt.sink, rt.schemas, rt.dedup, rt.dlq, rt.redis)
    timer = StageTimer.for_range_processor(processor)
    info = rt.redis.info("server")
    redis_pid = int(info["process_id"])
    runs = []
    for attempt in range(repeat):
        _flush(rt.redis)
        fresh = spec.model_copy(update={"rangeId": f"{spec.rangeId[:30]}-bench{attempt}"})
        before = cpu_seconds(redis_pid)
        with timer.run() as run:
            processor.process(fresh)
        run.add_external("redis-server", cpu_seconds(redis_pid) - before)
        runs.append(run)
    size = spec.end - spec.start
    mb = size / 1e6
    steps = {
        name: round(statistics.median(r.seconds.get(name, 0.0) for r in runs) * 1e3 / mb, 2)
        for name in dict.fromkeys(n for r in runs for n in r.seconds)
    }
    glue = statistics.median(r.total - sum(r.seconds.values()) for r in runs) * 1e3 / mb
    body = statistics.median(r.total for r in runs) * 1e3 / mb
    steps["other (pipeline glue)"] = round(glue, 2)
    return {
        "rangeMB": round(mb, 1),
        "runs": repeat,
        "cpuMsPerMB": steps,
        "rangeBody": round(body, 2),
        "redisPerRange": round(
            statistics.median(r.external["redis-server"] for r in runs) * 1e3 / mb, 2
        ),
        # Celery, planning, summaries, the import state: the worker's CPU beyond range bodies.
        "workerOutsideRangeBodies": round(worker_ms_per_mb - body, 2),
    }
