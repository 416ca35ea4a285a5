"""Real processes of the system under test, started from the Procfile's own lines."""

from __future__ import annotations

import signal
from pathlib import Path

import requests

from devstack import ROOT, ManagedProcess, free_port, procfile_commands, wait_for


class ProcessGroup:
    """The processes one test started; logs go to the test's directory."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[ManagedProcess] = []

    def start(self, name: str, command: str, env: dict[str, str]) -> ManagedProcess:
        log = self.log_dir / f"{name}-{len(self.procs)}.log"
        proc = ManagedProcess(
            name, ["bash", "-c", f"exec {command}"], env=env, log_path=log, cwd=ROOT
        ).start()
        self.procs.append(proc)
        return proc

    def start_procfile(self, name: str, env: dict[str, str], extra: str = "") -> ManagedProcess:
        return self.start(name, f"{procfile_commands()[name]} {extra}".strip(), env)

    def start_web(self, env: dict[str, str], workers: int = 2) -> tuple[ManagedProcess, str]:
        """The `web` entry on a free port; returns it with its base URL once /healthz answers."""
        env = dict(env, PORT=str(free_port()), INGEST_WEB_WORKERS=str(workers))
        proc = self.start_procfile("web", env)
        base = f"http://127.0.0.1:{env['PORT']}"

        def healthy() -> bool:
            if not proc.alive():
                raise RuntimeError(f"web exited:\n{proc.log_tail()}")
            return requests.get(f"{base}/healthz", timeout=1).status_code == 200

        wait_for(healthy, 60, 0.1, "web /healthz")
        return proc, base

    def start_worker(
        self, env: dict[str, str], concurrency: int = 2, extra: str = ""
    ) -> ManagedProcess:
        """The `worker` entry; returns once it answers a ping through the broker."""
        name = f"w{len(self.procs)}@%h"
        proc = self.start_procfile("worker", env, f"-c {concurrency} -n {name} {extra}")
        from celery import Celery

        app = Celery(broker=env["INGEST_REDIS_URL"], backend=env["INGEST_REDIS_URL"])

        def answers() -> bool:
            if not proc.alive():
                raise RuntimeError(f"worker exited:\n{proc.log_tail()}")
            return bool(app.control.ping(timeout=0.5))

        wait_for(answers, 60, 0.2, "worker to answer a ping")
        app.close()
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop(signal.SIGTERM, timeout=20)
