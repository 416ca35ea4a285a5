"""A sink wrapper that puts every batch write in an ``ingest.sink.write`` trace span."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

import pyarrow as pa

from ingest.observability.tracing import SINK_WRITE_SPAN, span
from ingest.sinks.base import Sink, StoredRecord, WriteResult

__all__ = ["TracedSink", "traced_sink"]


class TracedSink:
    """Delegates to ``inner``; writes are spans (no-op spans while tracing is off)."""

    def __init__(self, inner: Sink) -> None:
        self.inner = inner
        self.uri = inner.uri

    def write_records(self, name: str, records: Sequence[dict[str, Any]]) -> WriteResult:
        with span(SINK_WRITE_SPAN, **{"ingest.sink.batch": name, "ingest.records": len(records)}):
            return self.inner.write_records(name, records)

    def write_json_lines(self, name: str, lines: bytes, count: int) -> WriteResult:
        # Only called when the inner sink has it (``writes_json_lines``, found through
        # __getattr__, says so).
        with span(SINK_WRITE_SPAN, **{"ingest.sink.batch": name, "ingest.records": count}):
            inner: Any = self.inner
            return cast(WriteResult, inner.write_json_lines(name, lines, count))

    def write_table(self, name: str, table: pa.Table) -> WriteResult:
        with span(SINK_WRITE_SPAN, **{"ingest.sink.batch": name, "ingest.records": table.num_rows}):
            return self.inner.write_table(name, table)

    def exists(self, name: str) -> bool:
        return self.inner.exists(name)

    def check(self) -> None:
        self.inner.check()

    def iter_records(self) -> Iterator[StoredRecord]:
        return self.inner.iter_records()

    def __getattr__(self, attribute: str) -> Any:
        # Anything sink-specific (a file sink's root, say) stays reachable.
        return getattr(self.inner, attribute)


def traced_sink(sink: Sink) -> Sink:
    """``sink`` with traced writes (unchanged if it is traced already)."""
    return sink if isinstance(sink, TracedSink) else TracedSink(sink)
