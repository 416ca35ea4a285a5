"""Measure the CPU cost per event of the webhook batch endpoint and of storing its batches.

Web side: as ``loadtests/profile_webhook.py`` (whose helpers it uses) but for
``POST /v1/webhooks/<source>/batch``: a private Redis (``ingest.devstack``), the app built
with ``create_app``, a ``bulk``-like source (Standard Webhooks signature, unlimited rates)
and N signed NDJSON requests of ``--events`` events each, shaped as k6's webhooks_batch.js,
called as WSGI from ``--concurrency`` gevent greenlets. Events go through the real
publisher (outbox + one Celery message per ``--buffer-size`` events) into that Redis.

Worker side: the batches the web side just published, read back from the outbox (the
payload each message carries), decoded with kombu's JSON as a worker receives them and
stored with ``store_event_batch`` (content dedup in Redis, the default file sink in a
temporary directory, wrapped as the worker's runtime wraps it), then dropped from the
outbox as the task does. Celery's own per-message overhead is not included.

Both print CPU µs per event: this process's (``time.process_time``) and Redis's (from
``INFO cpu``), which on a 2-core box come out of the same budget. Examples::

    .venv/bin/python loadtests/profile_batch.py                        # 40 requests of 1000
    .venv/bin/python loadtests/profile_batch.py -n 100 --repeat 3      # steadier figures
    .venv/bin/python loadtests/profile_batch.py --side web --profile --by-module
    .venv/bin/python loadtests/profile_batch.py --side worker --profile --limit 40
    .venv/bin/python loadtests/profile_batch.py --buffer-size 1000 --events 1000

``--profile`` wraps each measured side in cProfile (roughly doubling its cost: read the
shares, not the absolute figures); ``--by-module`` adds the tottime summed by module.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCE = "bulk"

__all__ = ["main"]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--requests", type=int, default=40, help="measured requests")
    parser.add_argument("--events", type=int, default=1000, help="events per request")
    parser.add_argument("--warmup", type=int, default=4, help="requests before measuring")
    parser.add_argument("--repeat", type=int, default=1, help="measured rounds (best is kept)")
    parser.add_argument("--concurrency", type=int, default=2, help="greenlets sending at once")
    parser.add_argument("--buffer-size", type=int, default=200, help="http.bufferSize")
    parser.add_argument("--batch-interval", type=int, default=10, help="http.batchInterval ms")
    parser.add_argument("--side", choices=("web", "worker", "both"), default="both")
    parser.add_argument("--log-level", default="WARNING", help="as loadtests/run.py sets it")
    parser.add_argument("--profile", action="store_true", help="cProfile the measured work")
    parser.add_argument("--by-module", action="store_true", help="also sum tottime by module")
    parser.add_argument("--sort", default="tottime", help="pstats sort key of --profile")
    parser.add_argument("--limit", type=int, default=35, help="rows of the --profile report")
    return parser.parse_args(argv)


def _requests(count: int, events: int, secret: str, tag: str) -> list[dict[str, Any]]:
    """WSGI environs of ``count`` signed NDJSON batches, shaped as k6's webhooks_batch.js."""
    import json
    import random
    from datetime import UTC, datetime

    from profile_webhook import signed_environ

    environs = []
    for index in range(count):
        msg_id = f"batch_{tag}_{index}_{random.getrandbits(40):x}"
        at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        lines = [
            json.dumps(
                {
                    "type": "entity.observed",
                    "id": f"{msg_id}_{i}",
                    "entity": {"kind": "vessel", "name": "Sea Lion", "score": random.random()},
                    "at": at,
                },
                separators=(",", ":"),
            )
            for i in range(events)
        ]
        body = ("\n".join(lines) + "\n").encode()
        path = f"/v1/webhooks/{SOURCE}/batch"
        environs.append(signed_environ(secret, path, msg_id, body, "application/x-ndjson"))
    return environs


def _redis_cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _redis_usec(client: Any) -> dict[str, int]:
    """Microseconds Redis spent per command (scripts' inner commands also as ``eval:NAME``)."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["usec"]) for name, row in stats.items()}


class _Meter:
    """CPU of this process and of Redis over a ``with`` block, optionally under cProfile."""

    def __init__(self, client: Any, args: argparse.Namespace) -> None:
        import cProfile

        self.client, self.args = client, args
        self.profiler = cProfile.Profile() if args.profile else None
        self.cpu = self.redis = self.wall = 0.0
        self.commands: dict[str, int] = {}

    def __enter__(self) -> _Meter:
        import time

        self.redis = _redis_cpu(self.client)
        self.commands = _redis_usec(self.client)
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        if self.profiler is not None:
            self.profiler.enable()
        return self

    def __exit__(self, *exc: object) -> None:
        import time

        if self.profiler is not None:
            self.profiler.disable()
        self.cpu = time.process_time() - self.cpu
        self.wall = time.perf_counter() - self.wall
        self.redis = _redis_cpu(self.client) - self.redis
        after = _redis_usec(self.client)
        self.commands = {n: t - self.commands.get(n, 0) for n, t in after.items()}

    def report(self, what: str, events: int) -> float:
        per_event = self.cpu / events * 1e6
        print(
            f"{what}: {events} events, CPU {per_event:.1f} µs/event "
            f"(+ Redis {self.redis / events * 1e6:.1f} µs/event), wall {self.wall:.2f} s",
            flush=True,
        )
        if self.profiler is not None:
            busiest = sorted(self.commands.items(), key=lambda kv: -kv[1])[:8]
            shown = ", ".join(f"{n} {t / events:.1f}" for n, t in busiest if t)
            print(f"  Redis µs/event by command: {shown}")
            _print_profile(self.profiler, self.args)
        return per_event


def _print_profile(profiler: Any, args: argparse.Namespace) -> None:
    import pstats

    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats(args.sort).print_stats(args.limit)
    if not args.by_module:
        return
    by_module: dict[str, float] = {}
    for (filename, _, _), row in stats.stats.items():  # type: ignore[attr-defined]
        module = filename
        for marker in ("site-packages/", "/main/", "lib/python3.11/"):
            if marker in filename:
                module = filename.split(marker, 1)[1]
                break
        by_module[module] = by_module.get(module, 0.0) + row[2]
    total = sum(by_module.values()) or 1.0
    print("tottime by module:")
    for module, seconds in sorted(by_module.items(), key=lambda kv: -kv[1])[: args.limit]:
        print(f"  {seconds:8.3f} s {100 * seconds / total:5.1f} %  {module}")


def _web_round(app: Any, client: Any, args: argparse.Namespace, secret: str, tag: str) -> float:
    from profile_webhook import _send_all

    environs = _requests(args.requests, args.events, secret, tag)
    with _Meter(client, args) as meter:
        statuses = _send_all(app, environs, args.concurrency)
    if statuses.get(202, 0) != args.requests:
        print(f"warning: statuses {statuses}", file=sys.stderr)
    return meter.report(f"web {tag}", args.requests * args.events)


def _worker_round(client: Any, settings: Any, args: argparse.Namespace, tag: str) -> float:
    """Store every batch in the outbox, as the worker's task would; returns µs/event."""
    from ingest.http.outbox import ENTRIES_KEY, Outbox
    from kombu.utils.json import loads

    from ingest.dedup import DedupIndex
    from ingest.http.storage import store_event_batch
    from ingest.sinks import open_sink
    from ingest.sinks.traced import traced_sink

    raws = list(client.hgetall(ENTRIES_KEY).values())
    sink = traced_sink(open_sink(settings.sink_uri))
    dedup = DedupIndex(client, ttl_seconds=settings.http.idempotency.ttl, partitions=4)
    outbox = Outbox(client, settings.http.redeliver_after)
    events = 0
    with _Meter(client, args) as meter:
        for raw in raws:
            payload = loads(raw)
            events += len(payload["events"])
            store_event_batch(payload, sink, dedup, "webhook", None)
            outbox.done(str(payload["batchId"]))
    return meter.report(f"worker {tag} ({len(raws)} batches)", events)


def _run(redis_url: str, sink_dir: str, args: argparse.Namespace) -> None:
    import redis
    from profile_webhook import _send_all, web_app

    client = redis.Redis.from_url(redis_url)
    with web_app(redis_url, args, f"file://{sink_dir}", SOURCE) as (app, settings, secret):
        web: list[float] = []
        worker: list[float] = []
        if args.warmup:
            _send_all(app, _requests(args.warmup, args.events, secret, "warm"), args.concurrency)
            _worker_round(client, settings, argparse.Namespace(profile=False), "warmup")
        for round_no in range(1, args.repeat + 1):
            tag = f"r{round_no}"
            if args.side in ("web", "both"):
                web.append(_web_round(app, client, args, secret, tag))
            else:  # the worker side needs batches: publish them unmeasured
                _send_all(app, _requests(args.requests, args.events, secret, tag), args.concurrency)
            if args.side in ("worker", "both"):
                worker.append(_worker_round(client, settings, args, tag))
    if web:
        print(f"best web: {min(web):.1f} µs/event (CPU, web process)")
    if worker:
        print(f"best worker: {min(worker):.1f} µs/event (CPU, storing in-process)")


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    # As gunicorn's gevent worker: patch before Redis, Flask or threading users are imported.
    from gevent import monkey

    monkey.patch_all()
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "loadtests"))

    from ingest.devstack import RedisServer

    with tempfile.TemporaryDirectory(prefix="profile-batch-") as work:
        server = RedisServer(Path(work) / "redis").start()
        try:
            _run(server.url, str(Path(work) / "sink"), args)
        finally:
            server.stop(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
