"""A throw-away PostgreSQL server for the demo and tests: initdb, start on a free port, stop.

Production points ``INGEST_SINK_URI`` at its own database; this module only runs Debian's
PostgreSQL binaries on one machine, with trust authentication on loopback and a socket
directory of its own, so it never touches a system cluster.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from devstack import ManagedProcess, free_port, wait_for

__all__ = ["PostgresServer", "ensure_postgres_binaries", "postgres_bindir"]

DATABASE = "ingest"
# PostgreSQL refuses to run as root; when we are root the cluster belongs to this user.
SERVICE_USER = "postgres"


def postgres_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with an initdb, else initdb's on PATH."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if found:
        newest = max(found, key=lambda p: int(Path(p).parent.parent.name.split(".")[0]))
        return Path(newest).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def ensure_postgres_binaries() -> Path:
    """The PostgreSQL bin directory; as root, install Debian's ``postgresql`` when missing."""
    bindir = postgres_bindir()
    if bindir is not None:
        return bindir
    if os.geteuid() != 0:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], env=env, check=True)
    # The package starts a system cluster on 5432; ours run on ports of their own.
    subprocess.run(["service", "postgresql", "stop"], env=env, check=False, capture_output=True)
    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError("apt-get installed postgresql but no initdb was found")
    return bindir


class PostgresServer(ManagedProcess):
    """A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 only.

    ``durable=False`` (the default, for tests) turns off fsync: a crash of the test machine
    may lose the cluster, which is thrown away anyway.
    """

    def __init__(self, port: int | None = None, durable: bool = False) -> None:
        self.port = port or free_port()
        self.bindir = ensure_postgres_binaries()
        self.as_root = os.geteuid() == 0
        # Not under the caller's tmp_path: pytest's root-owned 0700 directories would keep
        # the postgres user out.
        self.workdir = Path(tempfile.mkdtemp(prefix="ingest-pg-"))
        self.datadir = self.workdir / "data"
        self.sockdir = self.workdir / "sock"
        settings = ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=100"]
        if not durable:
            settings += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
        argv = [
            *self._as_owner(),
            str(self.bindir / "postgres"),
            "-D",
            str(self.datadir),
            "-p",
            str(self.port),
            "-k",
            str(self.sockdir),
            *settings,
        ]
        super().__init__("postgres", argv, log_path=self.workdir / "postgres.log")

    def _as_owner(self) -> list[str]:
        return ["runuser", "-u", SERVICE_USER, "--"] if self.as_root else []

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def _initdb(self) -> None:
        for path in (self.datadir, self.sockdir):
            path.mkdir(parents=True)
        if self.as_root:
            owner = pwd.getpwnam(SERVICE_USER)
            for path in (self.workdir, self.datadir, self.sockdir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        subprocess.run(
            [
                *self._as_owner(),
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )

    def _create_database(self) -> bool:
        import psycopg

        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True, connect_timeout=2) as conn:
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]
            ).fetchone():
                conn.execute(f"CREATE DATABASE {DATABASE}")
        return True

    def start(self) -> PostgresServer:
        self._initdb()
        super().start()
        try:
            wait_for(self._create_database, 30, 0.1, f"postgres on port {self.port}")
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}\n{self.log_tail()}") from exc
        return self

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int | None:
        """Fast shutdown (SIGINT: SIGTERM would wait for clients), then remove the cluster."""
        code = super().stop(sig, timeout)
        with contextlib.suppress(OSError):
            shutil.rmtree(self.workdir)
        return code
