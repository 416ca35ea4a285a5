"""Measure the CPU cost per event of the webhook batch endpoint and of storing its events.

Starts a private Redis (``devstack``), builds the web app as ``profile_webhook.py`` does, and
sends ``--requests`` signed NDJSON batches of ``--batch`` unique events (shaped as k6's
``webhooks_batch.js``) through the WSGI app from a few greenlets. Then it drains the source's
stream into a file sink in a temporary directory with the worker's own code
(``tasks.webhooks``'s drain: consumer group, content dedup, provenance, one file per batch).

It prints, per event, the CPU time of this process for each half (the web's and the
worker's share; ``time.process_time``) and Redis's CPU (``INFO cpu``) for each, with the Redis
commands per event. CPU time is what a shared machine hardly disturbs; read the shares, and
compare runs of one session. Examples::

    .venv/bin/python loadtests/profile_batch.py                      # 40 batches of 1,000
    .venv/bin/python loadtests/profile_batch.py --repeat 3
    .venv/bin/python loadtests/profile_batch.py --profile web --limit 30
    .venv/bin/python loadtests/profile_batch.py --profile drain --sort cumtime
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "loadtests"))

__all__ = ["main"]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--requests", type=int, default=40, help="measured batches")
    parser.add_argument("--batch", type=int, default=1000, help="events per batch")
    parser.add_argument("--repeat", type=int, default=1, help="measured rounds")
    parser.add_argument("--concurrency", type=int, default=4, help="greenlets sending at once")
    parser.add_argument("--profile", choices=("web", "drain"), help="cProfile one half")
    parser.add_argument("--sort", default="tottime", help="pstats sort key of --profile")
    parser.add_argument("--limit", type=int, default=35, help="rows of the --profile report")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--buffer-size", type=int, default=200, help="http.bufferSize")
    parser.add_argument("--batch-interval", type=int, default=10, help="http.batchInterval ms")
    return parser.parse_args(argv)


def _bodies(count: int, size: int, tag: str) -> list[tuple[str, bytes]]:
    """``(webhook-id, NDJSON body)`` of ``count`` batches of unique events, as k6 sends them."""
    bodies = []
    for n in range(count):
        msg_id = f"batch_{tag}_{n}_{random.getrandbits(40):x}"
        lines = [
            json.dumps(
                {
                    "type": "entity.observed",
                    "id": f"{msg_id}_{i}",
                    "entity": {"kind": "vessel", "name": "Sea Lion", "score": random.random()},
                    "at": "2026-12-06T10:00:00.000Z",
                },
                separators=(",", ":"),
            )
            for i in range(size)
        ]
        bodies.append((msg_id, ("\n".join(lines) + "\n").encode()))
    return bodies


def _redis_cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _commands(client: Any) -> dict[str, int]:
    return {
        name.removeprefix("cmdstat_"): int(fields["calls"])
        for name, fields in client.info("commandstats").items()
    }


def _per_event(before: dict[str, int], after: dict[str, int], events: int) -> str:
    calls = {name: after[name] - before.get(name, 0) for name in after}
    shown = sorted((n, c) for n, c in calls.items() if c and n not in ("info",))
    return ", ".join(f"{name} {count / events:.3f}" for name, count in shown)


def _profiled(enabled: bool, call: Any) -> tuple[Any, cProfile.Profile | None]:
    profiler = cProfile.Profile() if enabled else None
    if profiler is not None:
        profiler.enable()
    try:
        return call(), profiler
    finally:
        if profiler is not None:
            profiler.disable()


def _report(profiler: cProfile.Profile | None, args: argparse.Namespace) -> None:
    if profiler is not None:
        pstats.Stats(profiler, stream=sys.stdout).sort_stats(args.sort).print_stats(args.limit)


def _round(app: Any, rt: Any, client: Any, secret: str, sink_dir: Path, args: Any, n: int) -> None:
    from profile_webhook import _send_all, signed_environ

    from ingest.webhooks.stream import stream_key

    path = "/v1/webhooks/load/batch"
    environs = [
        signed_environ(secret, path, msg_id, body, "application/x-ndjson")
        for msg_id, body in _bodies(args.requests, args.batch, f"r{n}")
    ]
    events = args.requests * args.batch
    commands, redis_cpu, cpu = _commands(client), _redis_cpu(client), time.process_time()
    statuses, profiler = _profiled(
        args.profile == "web", lambda: _send_all(app, environs, args.concurrency)
    )
    web_cpu, web_redis = time.process_time() - cpu, _redis_cpu(client) - redis_cpu
    web_commands = _per_event(commands, _commands(client), events)
    _report(profiler, args)
    if statuses.get(202, 0) != args.requests:
        print(f"warning: statuses {statuses}", file=sys.stderr)
    backlog = int(client.xlen(stream_key("load")))

    commands, redis_cpu, cpu = _commands(client), _redis_cpu(client), time.process_time()
    stored, profiler = _profiled(args.profile == "drain", lambda: _drain_all(rt))
    drain_cpu, drain_redis = time.process_time() - cpu, _redis_cpu(client) - redis_cpu
    drain_commands = _per_event(commands, _commands(client), events)
    _report(profiler, args)
    files = sum(1 for _ in sink_dir.rglob("*.jsonl*"))
    per = 1e6 / events
    print(
        f"round {n}: {args.requests} batches of {args.batch}, {backlog} entries in the stream, "
        f"{stored} stored ({files} files so far)\n"
        f"  web:   {web_cpu * per:6.1f} µs/event, Redis {web_redis * per:5.1f}"
        f" µs/event; commands per event: {web_commands}\n"
        f"  drain: {drain_cpu * per:6.1f} µs/event, Redis {drain_redis * per:5.1f}"
        f" µs/event; commands per event: {drain_commands}",
        flush=True,
    )


def _drain_all(rt: Any) -> int:
    """Drain the ``load`` stream with the worker's drain code until it is empty."""
    from tasks.webhooks import _drainer, store_now

    drainer = _drainer(rt)
    drainer.ensure_group("load")
    stored = 0

    def store(payload: dict[str, Any]) -> None:
        nonlocal stored
        payload.pop("traces", None)
        result = store_now(rt, payload)
        stored += int(result["stored"])

    def dead_letter(payload: dict[str, Any], deliveries: int) -> None:
        raise RuntimeError(f"dead-lettered after {deliveries}: {payload['batchId']}")

    while True:
        token = drainer.acquire("load", 0)
        assert token is not None
        drainer.drain("load", 0, token, store, dead_letter, None, max_seconds=600)
        undelivered, pending = drainer.backlog("load")
        if undelivered == 0 and pending == 0:
            break
    return stored


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    from gevent import monkey

    monkey.patch_all()
    import os

    import redis
    from profile_webhook import web_app

    from devstack import RedisServer

    with tempfile.TemporaryDirectory(prefix="profile-batch-") as work:
        server = RedisServer(Path(work) / "redis").start()
        try:
            sink_dir = Path(work) / "sink"
            # tasks.app reads its settings from the environment when imported.
            os.environ["INGEST_SINK_URI"] = f"file://{sink_dir}"
            os.environ["INGEST_REDIS_URL"] = server.url
            from ingest.runtime import Runtime

            client = redis.Redis.from_url(server.url, decode_responses=True)
            with web_app(server.url, args, sink=f"file://{sink_dir}") as (app, settings, secret):
                rt = Runtime(settings)
                for n in range(args.repeat):
                    _round(app, rt, client, secret, sink_dir, args, n + 1)
        finally:
            server.stop(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
