"""Measure the CPU cost of one signed single-event webhook request, in this process.

Starts a private Redis (``devstack``), builds the web app with ``create_app`` and a
source configured as ``loadtests/run.py`` configures its ``load`` source (Standard Webhooks
signature, rate limits too high to matter), then calls the WSGI app directly with N signed,
unique events from a pool of gevent greenlets, as a gunicorn gevent worker would. Events go
through the real accept script into their source's stream (no Celery worker drains it).

What it prints is CPU time (``time.process_time``: every thread and greenlet of the process)
per request, which the other jobs of a shared machine hardly disturb,
unlike wall-clock rates. The requests are built before the clock starts, so the load
generator's own work is not counted; gunicorn's HTTP parsing is not either. Examples::

    .venv/bin/python loadtests/profile_webhook.py                      # 5000 requests
    .venv/bin/python loadtests/profile_webhook.py -n 20000 --repeat 3  # steadier figures
    .venv/bin/python loadtests/profile_webhook.py --profile --sort tottime --limit 40
    .venv/bin/python loadtests/profile_webhook.py --concurrency 1 --profile  # clean call tree
    .venv/bin/python loadtests/profile_webhook.py --rate 500 --concurrency 600  # as k6 sends

Closed loop (the default) keeps ``--concurrency`` requests in flight; concurrent requests
share Redis round trips (pipelined scripts, ``CoalescedScript``), so the per-round-trip costs
are shared the more the higher the load (see the Redis commands per request each round prints).

``--profile`` wraps the measured requests in cProfile (which roughly doubles their cost):
read the shares, not the absolute figures. With greenlets, cumulative times of frames that
switch (waits on Redis and on the publisher) are unreliable; ``tottime`` stays right.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCE = "load"
# As loadtests/run.py: unlimited for practical purposes, so the limiter never refuses.
UNLIMITED = {"maxPerSecond": 1_000_000, "burstSize": 1_000_000}

__all__ = ["main"]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--requests", type=int, default=5000, help="measured requests")
    parser.add_argument("--warmup", type=int, default=500, help="requests before measuring")
    parser.add_argument("--repeat", type=int, default=1, help="measured rounds (best is kept)")
    parser.add_argument("--concurrency", type=int, default=64, help="greenlets sending at once")
    parser.add_argument(
        "--rate",
        type=float,
        default=0,
        help="start requests at this rate per second (open loop, as k6) instead of closed loop",
    )
    parser.add_argument("--buffer-size", type=int, default=200, help="http.bufferSize")
    parser.add_argument("--batch-interval", type=int, default=10, help="http.batchInterval ms")
    parser.add_argument("--log-level", default="WARNING", help="as loadtests/run.py sets it")
    parser.add_argument("--redis-url", help="use this Redis (it is flushed) instead of a new one")
    parser.add_argument("--profile", action="store_true", help="cProfile the measured requests")
    parser.add_argument("--sort", default="tottime", help="pstats sort key of --profile")
    parser.add_argument("--limit", type=int, default=35, help="rows of the --profile report")
    parser.add_argument("--dump", type=Path, help="write the raw cProfile stats here")
    return parser.parse_args(argv)


def settings_for(
    redis_url: str,
    args: argparse.Namespace,
    secret: str,
    sink: str | None = None,
    source_name: str = SOURCE,
) -> Any:
    """Settings of a web process with one source (``load``), as loadtests/run.py declares it."""
    from ingest.config import build_settings

    source = {
        "signature": {"scheme": "standard-webhooks", "secrets": [secret]},
        "purpose": "load-test",
        "classification": "internal",
        "rateLimit": UNLIMITED,
    }
    config: dict[str, Any] = {
        "redisUrl": redis_url,
        "http": {
            "bufferSize": args.buffer_size,
            "batchInterval": args.batch_interval,
            "globalRateLimit": UNLIMITED,
            "sources": {source_name: source},
            # No worker drains the queue here; do not let backpressure refuse the run.
            "backpressure": {"highWaterMark": 10_000_000},
        },
        "observability": {"logLevel": args.log_level},
    }
    if sink is not None:
        config["sinkUri"] = sink
    return build_settings(config)


@contextlib.contextmanager
def web_app(
    redis_url: str, args: argparse.Namespace, sink: str | None = None, source_name: str = SOURCE
) -> Iterator[tuple[Any, Any, str]]:
    """``(app, settings, secret)``: the web app on a flushed Redis, with multiprocess metrics
    as gunicorn_conf sets them up (every value in an mmap file); stopped on exit."""
    import base64
    import os
    import secrets

    import redis

    from ingest.observability.metrics import use_multiprocess_values
    from ingest.observability.metrics_dir import prepare_metrics_dir

    redis.Redis.from_url(redis_url).flushdb()
    metrics_dir = prepare_metrics_dir(None, f"profile-{os.getpid()}")
    metrics_dir.activate()
    use_multiprocess_values()
    try:
        from webapp import create_app

        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        settings = settings_for(redis_url, args, secret, sink, source_name)
        yield create_app(settings), settings, secret
    finally:
        metrics_dir.cleanup()


def _requests(count: int, secret: str, tag: str) -> list[dict[str, Any]]:
    """WSGI environs of ``count`` signed unique events, shaped as k6's webhooks_single.js."""
    import json
    import random
    from datetime import UTC, datetime

    environs = []
    for index in range(count):
        msg_id = f"msg_{tag}_{index}_{random.getrandbits(40):x}"
        body = json.dumps(
            {
                "type": "entity.observed",
                "id": msg_id,
                "entity": {"kind": "person", "name": "Ada Lovelace", "score": random.random()},
                "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            }
        ).encode()
        environs.append(signed_environ(secret, f"/v1/webhooks/{SOURCE}", msg_id, body))
    return environs


def signed_environ(
    secret: str, path: str, msg_id: str, body: bytes, content_type: str = "application/json"
) -> dict[str, Any]:
    """The WSGI environ of a POST of ``body`` to ``path``, signed as Standard Webhooks."""
    import time

    from werkzeug.test import EnvironBuilder

    from ingest.webhooks.signatures import sign_standard_webhook

    timestamp = int(time.time())
    headers = {
        "Content-Type": content_type,
        "User-Agent": "k6/profile",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_standard_webhook(secret, msg_id, timestamp, body),
    }
    builder = EnvironBuilder(
        path=path, method="POST", base_url="http://127.0.0.1:8000", headers=headers, data=body
    )
    return dict(builder.get_environ())


def _send_all(
    app: Any, environs: list[dict[str, Any]], concurrency: int, rate: float = 0
) -> dict[int, int]:
    """Call the app once per environ from up to ``concurrency`` greenlets; count answers by
    status. With ``rate``, requests start at that many per second (as k6's arrival-rate
    executor sends them), else each greenlet sends its next one as soon as it has an answer."""
    import time

    import gevent
    from gevent.pool import Pool

    statuses: dict[int, int] = {}

    def call(environ: dict[str, Any]) -> None:
        seen: list[str] = []

        def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
            seen.append(status)

        body = app(environ, start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        code = int(seen[0].split()[0])
        statuses[code] = statuses.get(code, 0) + 1

    pool = Pool(concurrency)
    if not rate:
        pool.map(call, environs)
        return statuses
    started = time.perf_counter()
    for index, environ in enumerate(environs):
        gevent.sleep(max(0.0, started + index / rate - time.perf_counter()))
        pool.spawn(call, environ)  # waits for a free greenlet when all are busy
    pool.join()
    return statuses


def _command_counts(client: Any) -> dict[str, int]:
    """Commands Redis has run, by name (those scripts run included, as ``eval:HSET``)."""
    return {
        name.removeprefix("cmdstat_"): int(fields["calls"])
        for name, fields in client.info("commandstats").items()
    }


def _commands_per_request(before: dict[str, int], after: dict[str, int], requests: int) -> str:
    calls = {name: after[name] - before.get(name, 0) for name in after}
    shown = sorted((n, c) for n, c in calls.items() if c and n not in ("info",))
    return ", ".join(f"{name} {count / requests:.2f}" for name, count in shown)


def _measure(app: Any, client: Any, args: argparse.Namespace, secret: str, round_no: int) -> float:
    """One measured round; returns CPU µs per request."""
    import cProfile
    import pstats
    import time

    environs = _requests(args.requests, secret, f"r{round_no}")
    profiler = cProfile.Profile() if args.profile else None
    commands = _command_counts(client)
    wall, cpu = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    statuses = _send_all(app, environs, args.concurrency, args.rate)
    if profiler is not None:
        profiler.disable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    per_request = cpu / args.requests * 1e6
    print(
        f"round {round_no}: {args.requests} requests, statuses {dict(sorted(statuses.items()))}, "
        f"CPU {per_request:.0f} µs/request, wall {wall:.2f} s ({args.requests / wall:.0f}/s)\n"
        "  Redis commands per request: "
        + _commands_per_request(commands, _command_counts(client), args.requests),
        flush=True,
    )
    if statuses.get(202, 0) != args.requests:
        print("warning: not every request was answered 202", file=sys.stderr)
    if profiler is not None:
        if args.dump:
            profiler.dump_stats(str(args.dump))
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats(args.sort).print_stats(args.limit)
    return per_request


def _run(redis_url: str, args: argparse.Namespace) -> None:
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    with web_app(redis_url, args) as (app, _, secret):
        if args.warmup:
            warmup = _requests(args.warmup, secret, "warm")
            _send_all(app, warmup, args.concurrency, args.rate)
        results = [_measure(app, client, args, secret, n + 1) for n in range(args.repeat)]
        print(f"best: {min(results):.0f} µs/request (CPU, whole process)")


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    # As gunicorn's gevent worker: patch before Redis, Flask or threading users are imported.
    from gevent import monkey

    monkey.patch_all()
    sys.path.insert(0, str(ROOT))
    import tempfile

    from devstack import RedisServer

    if args.redis_url:
        _run(args.redis_url, args)
        return 0
    with tempfile.TemporaryDirectory(prefix="profile-webhook-") as work:
        server = RedisServer(Path(work) / "redis").start()
        try:
            _run(server.url, args)
        finally:
            server.stop(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
