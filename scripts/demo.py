"""Drive the demo: start the local stack, run the Procfile processes, ingest, and summarise."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest.devstack import (  # noqa: E402
    ManagedProcess,
    MotoServer,
    RedisServer,
    free_port,
    procfile_commands,
    wait_for,
)


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if body is not None and raw is None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Stack:
    """The demo's processes, stopped in reverse order on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[ManagedProcess] = []
        self.env = dict(os.environ)

    def start_services(self) -> None:
        if not self.env.get("INGEST_REDIS_URL"):
            redis = RedisServer(self.workdir / "redis").start()
            self.processes.append(redis)
            self.env["INGEST_REDIS_URL"] = redis.url
            say(f"started a local Redis (AOF on) at {redis.url}")
        else:
            say(f"using the configured Redis {self.env['INGEST_REDIS_URL']}")
        if not self.env.get("INGEST_S3_ENDPOINT_URL"):
            s3 = MotoServer(log_path=self.workdir / "logs" / "s3.log").start()
            self.processes.append(s3)
            self.env["INGEST_S3_ENDPOINT_URL"] = s3.url
            self.env.setdefault("AWS_ACCESS_KEY_ID", "testing")
            self.env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
            say(f"started a local S3 server at {s3.url}")
        self.env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        self.env.setdefault("INGEST_SINK_URI", f"file://{self.workdir / 'sink'}")
        self.env.setdefault("INGEST_ADMIN_TOKEN", "demo-admin-token")
        self.env["PORT"] = self.env.get("PORT") or str(free_port())
        self.env["FLOWER_PORT"] = self.env.get("FLOWER_PORT") or str(free_port())

    def start_procfile(self, names: tuple[str, ...]) -> None:
        commands = procfile_commands()
        for name in names:
            proc = ManagedProcess(
                name,
                ["bash", "-c", f"exec {commands[name]}"],
                env=self.env,
                log_path=self.workdir / "logs" / f"{name}.log",
                cwd=ROOT,
            )
            self.processes.append(proc.start())
            say(f"started `{name}`: {commands[name]}")

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop(signal.SIGTERM, timeout=20)


def wait_ready(base: str, stack: Stack) -> None:
    def ready() -> bool:
        for proc in stack.processes:
            if not proc.alive():
                raise SystemExit(f"`{proc.name}` exited early:\n{proc.log_tail()}")
        try:
            return http("GET", f"{base}/readyz")[0] == 200
        except OSError:
            return False

    wait_for(ready, 90, 0.2, "the web process to be ready")


def wait_worker(stack: Stack) -> float:
    from celery import Celery

    app = Celery(broker=stack.env["INGEST_REDIS_URL"], backend=stack.env["INGEST_REDIS_URL"])
    app.conf.task_routes = {"ingest.control.*": {"queue": "ingest.control"}}
    started = time.monotonic()
    result = app.send_task("ingest.control.ping", queue="ingest.control")
    if result.get(timeout=120) != "pong":
        raise SystemExit("the worker did not answer")
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--workdir", default=str(ROOT / "var" / "demo" / time.strftime("%Y%m%d-%H%M%S"))
    )
    parser.add_argument(
        "--keep-running", action="store_true", help="leave the processes running until Ctrl-C"
    )
    args = parser.parse_args()
    stack = Stack(Path(args.workdir))
    stack.workdir.mkdir(parents=True, exist_ok=True)
    say(f"working directory {stack.workdir}")
    try:
        stack.start_services()
        stack.start_procfile(("web", "worker", "flower"))
        base = f"http://127.0.0.1:{stack.env['PORT']}"
        wait_ready(base, stack)
        say(f"web is ready at {base} (/readyz answered 200)")
        took = wait_worker(stack)
        say(f"worker answered a ping through the broker in {took:.2f}s")
        summary: dict[str, Any] = {
            "web": base,
            "flower": f"http://127.0.0.1:{stack.env['FLOWER_PORT']}",
            "sink": stack.env["INGEST_SINK_URI"],
        }
        print(json.dumps({"summary": summary}, indent=2))
        if args.keep_running:
            say("running; press Ctrl-C to stop")
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        return 0
    finally:
        stack.stop()
        say(f"stopped; logs are in {stack.workdir / 'logs'}")


if __name__ == "__main__":
    sys.exit(main())
