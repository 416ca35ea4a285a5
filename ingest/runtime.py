"""Per-process handles on the outside world (Redis, S3, sink), built once from the settings.

Handles are created lazily so that a prefork worker's children each open their own sockets
after the fork instead of sharing the parent's, and their modules load on first use: the web
process, which never validates a row nor writes to the sink, loads no pandas, pyarrow or
pandera.
"""

from __future__ import annotations

import logging
import threading
from functools import cached_property
from typing import TYPE_CHECKING, Any

import redis

from ingest.config import Settings, load_settings

if TYPE_CHECKING:
    from ingest.dedup import DedupIndex
    from ingest.dlq import DeadLetterQueue
    from ingest.schemas import SchemaNames, SchemaRegistry
    from ingest.sinks import Sink

__all__ = ["Runtime", "get_runtime", "reset_runtime"]


class Runtime:
    """Everything a connector needs from the environment, for one process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(
            self.settings.redis_url,
            socket_timeout=5,
            socket_connect_timeout=2,
            health_check_interval=30,
        )

    @cached_property
    def s3(self) -> Any:
        from ingest.s3client import s3_client

        return s3_client(self.settings.s3_endpoint_url, self.settings.s3csv.region)

    @cached_property
    def schemas(self) -> SchemaRegistry:
        from ingest.schemas import SchemaRegistry

        return SchemaRegistry.load(self.settings.schemas_dir)

    @cached_property
    def schema_names(self) -> SchemaNames:
        """The schema names alone (what an import request is checked against), without pandera."""
        from ingest.schemas.names import SchemaNames

        return SchemaNames.load(self.settings.schemas_dir)

    @cached_property
    def dedup(self) -> DedupIndex:
        from ingest.dedup import DedupIndex

        return DedupIndex(self.redis, ttl_seconds=self.settings.s3csv.deduplication.ttl)

    @cached_property
    def dlq(self) -> DeadLetterQueue:
        from ingest.dlq import DeadLetterQueue

        return DeadLetterQueue(
            self.redis,
            max_entries=self.settings.dlq.max_entries,
            warn_threshold=self.settings.dlq.warn_threshold,
            on_threshold=_warn_dlq_depth,
        )

    @cached_property
    def sink(self) -> Sink:
        from ingest.sinks import open_sink
        from ingest.sinks.traced import traced_sink

        uri = self.settings.sink_uri
        # Writes are traced (ingest.sink.write spans) whatever the sink is.
        return traced_sink(open_sink(uri, s3_client=self.s3 if uri.startswith("s3://") else None))


def _warn_dlq_depth(depth: int) -> None:
    logging.getLogger("ingest.dlq").warning("DLQ depth %d is past its warning threshold", depth)


_lock = threading.Lock()
_runtime: Runtime | None = None


def get_runtime(settings: Settings | None = None) -> Runtime:
    """The process's runtime, built from ``settings`` or the environment on first use."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime(settings or load_settings())
        return _runtime


def reset_runtime(settings: Settings | None = None) -> Runtime | None:
    """Drop the process's handles (after a fork, or in tests) and optionally install new ones."""
    global _runtime
    with _lock:
        _runtime = Runtime(settings) if settings is not None else None
        return _runtime
