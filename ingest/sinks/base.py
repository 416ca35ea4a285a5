"""The sink interface: where stored records go, each ``{"data": ..., "provenance": ...}``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

__all__ = ["Sink", "SinkError", "StoredRecord", "WriteResult"]


class SinkError(RuntimeError):
    """The sink could not store or read records; callers retry and then dead-letter."""


@dataclass(frozen=True)
class WriteResult:
    """What one batch write did: ``new`` records stored, ``present`` already there."""

    location: str
    new: int
    present: int


@dataclass(frozen=True)
class StoredRecord:
    location: str
    record: dict[str, Any]


class Sink(Protocol):
    """A target for record batches, each named by its identity: writing one twice stores it once."""

    uri: str

    def write_records(self, name: str, records: Sequence[dict[str, Any]]) -> WriteResult:
        """Store row-shaped records (each with ``data`` and ``provenance``) as batch ``name``."""
        ...

    def write_table(self, name: str, table: pa.Table) -> WriteResult:
        """Store an Arrow table with struct columns ``data`` and ``provenance`` as ``name``."""
        ...

    def exists(self, name: str) -> bool:
        """Whether batch ``name`` is already stored."""
        ...

    def check(self) -> None:
        """Raise :class:`SinkError` when the sink is not reachable or not writable."""
        ...

    def iter_records(self) -> Iterator[StoredRecord]:
        """Every stored record (for verification and tests; not a hot path)."""
        ...
