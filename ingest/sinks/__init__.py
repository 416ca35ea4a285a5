"""Sinks: the targets stored records are written to."""

from __future__ import annotations

from typing import Any

from ingest.sinks.base import Sink, SinkError, StoredRecord, WriteResult
from ingest.sinks.file import FileSink

__all__ = ["FileSink", "Sink", "SinkError", "StoredRecord", "WriteResult", "open_sink"]


def open_sink(uri: str, s3_client: Any = None) -> Sink:
    """The sink for ``uri``: ``file://DIR``, ``s3://bucket/prefix`` or ``postgresql://...``."""
    if uri.startswith(("file://", "s3://")):
        return FileSink(uri, s3_client=s3_client)
    if uri.startswith(("postgresql://", "postgres://")):
        from ingest.sinks.postgres import PostgresSink

        return PostgresSink(uri)
    raise ValueError(
        f"unsupported sink URI {uri!r}: use file://DIR, s3://bucket/prefix or postgresql://..."
    )
