"""The one S3 client factory: every S3 read and write of a process goes through these clients.

Clients are thread-safe and cached per process, endpoint and region; the process id is part of
the key because a client's connection pool must not be shared across a fork (Celery's prefork
pool). Credentials come from boto3's chain (``AWS_ACCESS_KEY_ID``, profiles, instance roles).
botocore retries throttling and transient errors itself (``standard`` mode, 3 attempts in all);
the tasks' own retries with backoff and the circuit breaker sit above that.
"""

from __future__ import annotations

import os
import threading
from typing import Any

__all__ = ["S3_CLIENT_OPTIONS", "s3_client"]

S3_CLIENT_OPTIONS: dict[str, Any] = {
    "retries": {"max_attempts": 3, "mode": "standard"},
    "connect_timeout": 5,
    "read_timeout": 60,
    "max_pool_connections": 32,
}
_clients: dict[tuple[int, str | None, str | None], Any] = {}
_lock = threading.Lock()


def s3_client(endpoint_url: str | None, region: str | None = None) -> Any:
    """The process's S3 client for this endpoint (``None``: AWS) and region."""
    key = (os.getpid(), endpoint_url, region)
    with _lock:
        client = _clients.get(key)
        if client is None:
            # boto3 loads on first use: processes that never touch S3 (the web) do not pay.
            import boto3
            from botocore.config import Config

            # A Session is not thread-safe, so each client is made from its own, under the lock.
            client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                config=Config(**S3_CLIENT_OPTIONS),
            )
            _clients[key] = client
        return client
