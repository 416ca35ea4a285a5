"""Fixtures the fault tests share."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import RedisServer


@pytest.fixture()
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    # appendfsync always: with everysec, a Redis whose background fsync runs late (a busy
    # disk) may answer writes it has not yet written to the AOF for up to 2 s, and a kill -9
    # then loses them (see docs/guarantees.md). These tests prove what `always` guarantees.
    server = RedisServer(tmp_path / "redis", appendfsync="always").start()
    try:
        yield server
    finally:
        server.stop(signal.SIGTERM, timeout=10)
