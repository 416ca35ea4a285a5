"""Shared fixtures: one real Redis and one local S3 server per test session."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import ProcessGroup
from tests.support.services import MotoServer, RedisServer, local_s3_client

pytest_plugins = ["tests.support.pg_fixtures"]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis URL: INGEST_TEST_REDIS_URL when given, else a redis-server of our own."""
    given = os.environ.get("INGEST_TEST_REDIS_URL")
    if given:
        yield given
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture()
def redis_client(redis_url: str) -> Iterator[object]:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of a moto S3 server started for this session."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = MotoServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture()
def s3_client(s3_endpoint: str) -> object:
    return local_s3_client(s3_endpoint)


@pytest.fixture()
def bucket(s3_client: object) -> str:
    """A fresh, empty bucket."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)  # type: ignore[attr-defined]
    return name


@pytest.fixture()
def sink_dir(tmp_path: Path) -> Path:
    path = tmp_path / "sink"
    path.mkdir()
    return path


@pytest.fixture()
def stack_env(
    redis_url: str, s3_endpoint: str, sink_dir: Path, redis_client: object
) -> dict[str, str]:
    """Environment for processes of the system under test (Redis and sink of this test)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "PORT", "FLOWER_"))}
    # The Procfile's commands (gunicorn, celery) are the ones installed beside this interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        {
            "INGEST_REDIS_URL": redis_url,
            "INGEST_S3_ENDPOINT_URL": s3_endpoint,
            "INGEST_SINK_URI": f"file://{sink_dir}",
            "INGEST_ADMIN_TOKEN": "test-admin-token",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "INGEST_OBSERVABILITY__LOG_JSON": "true",
        }
    )
    return env


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


_CALL_FAILED = pytest.StashKey[bool]()


@pytest.fixture()
def procs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcessGroup]:
    """Starts Procfile entries (or any command) and stops them all after the test.

    When the test failed, the end of every process's log is printed, so that a failure on a
    machine nobody can log into (CI) still shows what the workers and the web were doing.
    """
    group = ProcessGroup(tmp_path / "logs")
    try:
        yield group
    finally:
        group.stop_all()
        if request.node.stash.get(_CALL_FAILED, False):
            for proc in group.procs:
                tail = "\n".join(line[:400] for line in proc.log_tail(80).splitlines())
                print(f"----- the end of {proc.log_path} -----\n{tail}")
