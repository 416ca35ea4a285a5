"""A local stack for the demo and tests: Redis, a local S3 server and Procfile processes.

Production runs these with its own process manager; this module only starts what is missing on
one machine, on ports of its own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

__all__ = [
    "ManagedProcess",
    "MotoServer",
    "RedisServer",
    "cpu_seconds",
    "free_port",
    "local_s3_client",
    "port_open",
    "procfile_commands",
    "wait_for",
]

ROOT = Path(__file__).resolve().parent.parent


def cpu_seconds(*pids: int, children: bool = False) -> float:
    """User + system CPU seconds so far of processes ``pids`` (all their threads), from /proc.

    With ``children``, each process's live children count too (gunicorn's or Celery's
    workers). A process that is gone counts as 0. For the benchmarks in ``loadtests/``.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    found = list(pids)
    if children:
        for pid in pids:
            with contextlib.suppress(OSError):
                kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                found += [int(kid) for kid in kids]
    total = 0.0
    for pid in found:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def free_port() -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_for(
    condition: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str = "condition",
) -> Any:
    """Poll ``condition`` until it returns something truthy; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # the condition may fail until the service is up
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout}s waiting for {message}"
        + (f" (last error: {last_exc!r})" if last_exc else "")
    )


class ManagedProcess:
    """A child process with its output in a log file, stopped by signal on demand."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name, self.argv, self.cwd = name, argv, cwd
        self.env = dict(env) if env is not None else dict(os.environ)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> ManagedProcess:
        out: Any = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")
            out = self._log
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            # A process group of its own, to signal it with its children, but the caller's
            # session: a new session would also be a new scheduler autogroup (Linux's
            # sched_autogroup, on by default), and CFS shares CPU equally between autogroups,
            # not processes, so each part of a stack on one machine (Redis, web, worker, the
            # load generator) would get the same share whatever it needs.
            process_group=0,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal the process group and wait; SIGKILL what is left after ``timeout``."""
        if self.proc is None:
            return None
        self.signal_group(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            self.proc.wait(timeout=10)
        code = self.proc.returncode
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class RedisServer(ManagedProcess):
    """Debian's redis-server with AOF persistence (``appendfsync everysec`` unless told) and
    noeviction."""

    def __init__(
        self, workdir: Path, port: int | None = None, appendfsync: str = "everysec"
    ) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: apt-get install redis-server")
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(
            "redis",
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(workdir),
                "--appendonly",
                "yes",
                "--appendfsync",
                appendfsync,
                "--save",
                "",
                "--maxmemory-policy",
                "noeviction",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            log_path=workdir / "redis.log",
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        super().start()
        wait_for(lambda: port_open(self.port), 20, message=f"redis-server on port {self.port}")
        return self


class MotoServer(ManagedProcess):
    """moto's S3 server in server mode, over HTTP on loopback.

    It runs through ``devstack/s3server.py``, which serves a ranged GET from the requested
    bytes instead of a copy of the whole object (moto's own way), when moto is importable
    here; otherwise as the plain ``moto_server`` script.
    """

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        if importlib.util.find_spec("moto") is not None:
            command = [sys.executable, str(Path(__file__).with_name("s3server.py"))]
        else:
            command = [
                shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
            ]
        env = dict(
            os.environ,
            AWS_ACCESS_KEY_ID=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
            AWS_SECRET_ACCESS_KEY=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        )
        super().__init__(
            "s3", [*command, "-H", "127.0.0.1", "-p", str(self.port)], env=env, log_path=log_path
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        super().start()
        wait_for(lambda: port_open(self.port), 30, message=f"moto S3 server on port {self.port}")
        return self


def local_s3_client(endpoint_url: str) -> Any:
    """A boto3 S3 client for a local S3 server (moto) with its test credentials."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def procfile_commands(path: Path | None = None) -> dict[str, str]:
    """The Procfile's entries, ``name -> command line``."""
    procfile = path or ROOT / "Procfile"
    entries = {}
    for line in procfile.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and ":" in line:
            name, command = line.split(":", 1)
            entries[name.strip()] = command.strip()
    return entries
