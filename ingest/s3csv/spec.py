"""What a range task is given, and how a range is named.

The planner (:mod:`ingest.s3csv.planning`) makes the specs, the scan task stores them in
Redis as JSON, and each range task (:mod:`ingest.s3csv.pipeline`) is given one.
"""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel

__all__ = ["RangeSpec", "range_identity"]


class RangeSpec(BaseModel):
    """What a range task is given: the bytes to read and the import they belong to."""

    importId: str
    rangeId: str
    index: int
    bucket: str
    key: str
    etag: str | None
    start: int
    end: int
    firstLine: int
    headerB64: str | None = None  # the object's header record; None: the range starts at 0
    compressed: bool = False
    # Bytes this range accounts for in the import's progress (range 0 also owns the header).
    countedBytes: int | None = None
    schema_name: str
    schemaVersion: str
    purpose: str
    classification: str | None = None
    mapping: dict[str, str] = {}
    ingestedBy: str
    parentId: str | None = None
    # Set by the planner for a nominal span of a large object that finds its own records
    # (ingest.s3csv.spans): start/end are then the span, not record boundaries.
    spanSize: int | None = None
    objectSize: int | None = None
    bodyStart: int = 0  # where the records after the header start (span 0 starts there)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def range_identity(
    bucket: str,
    key: str,
    etag: str | None,
    start: int,
    end: int,
    schema: str,
    version: str,
    mapping: dict[str, str],
    purpose: str,
    classification: str | None,
) -> str:
    """A range's identity: the same object version, bytes and processing give the same id."""
    material = json.dumps(
        [bucket, key, etag, start, end, schema, version, mapping, purpose, classification],
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:40]
