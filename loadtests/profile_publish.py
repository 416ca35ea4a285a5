"""CPU per published webhook batch: the outbox write plus Celery's publish, or both in one MULTI.

Starts a private Redis (``ingest.devstack``) and, in this process, writes ``-n`` batches of
``--events`` events each way the web's publisher can (see ``webapp.publisher``):

- ``outbox + send_task``: ``Outbox.put`` and then ``celery.send_task`` (another broker);
- ``one MULTI``: ``broker_message`` and ``Outbox.put`` with it (the broker is this Redis).

It prints this process's CPU (``time.process_time``) per batch for each. Example::

    .venv/bin/python loadtests/profile_publish.py -n 2000 --events 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest.devstack import RedisServer  # noqa: E402

__all__ = ["main"]


def _cpu_per_call(fn: Callable[[], None], count: int) -> float:
    for _ in range(min(200, count)):  # warm up: connections, script and queue declarations
        fn()
    started = time.process_time()
    for _ in range(count):
        fn()
    return (time.process_time() - started) / count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--batches", type=int, default=2000, help="batches each way")
    parser.add_argument("--events", type=int, default=10, help="events per batch")
    args = parser.parse_args(argv)

    import redis

    from ingest.config import build_settings
    from ingest.http.outbox import broker_message, published
    from webapp.publisher import QUEUE, TASK_NAME, outbox_for, producer_celery, send_batch

    with tempfile.TemporaryDirectory(prefix="profile-publish-") as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        try:
            settings = build_settings({"redisUrl": server.url})
            celery, outbox = producer_celery(settings), outbox_for(settings)
            event = {"eventId": "e" * 32, "contentHash": "0" * 64, "eventJson": '{"n":1}'}
            payload = {"batchId": "b" * 32, "source": "load", "events": [event] * args.events}

            def two_steps() -> None:
                outbox.put(payload)
                send_batch(celery, payload)

            def one_multi() -> None:
                message = broker_message(celery, TASK_NAME, QUEUE, payload)
                outbox.put(payload, message)
                published(celery, TASK_NAME, QUEUE, message)

            for name, fn in (("outbox + send_task", two_steps), ("one MULTI", one_multi)):
                seconds = _cpu_per_call(fn, args.batches)
                print(f"{name:20s} {seconds * 1e6:7.0f} µs of CPU per batch", flush=True)
                redis.Redis.from_url(server.url).flushdb()  # the next way starts empty
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
