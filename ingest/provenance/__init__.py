"""Provenance: where every stored record came from, who brought it in, and why.

``ProvenanceMetadata`` carries the seed's field names exactly. Connectors never build it by
hand: they make one :class:`ProvenanceBuilder` per batch and stamp each record with it, so the
shared fields cannot drift between connectors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ingest.hashing import HASH_ALGORITHM, canonical_json, sha256_hex
from ingest.isotime import utc_now_iso

if TYPE_CHECKING:  # pyarrow is loaded by the columnar writers only, not by webhook processes
    import pyarrow as pa

__all__ = [
    "ProvenanceBuilder",
    "ProvenanceMetadata",
    "SourceType",
    "iso_now",
    "provenance_json_schema",
    "validate_provenance",
]

SourceType = Literal["S3", "HTTP", "MANUAL"]
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def iso_now() -> str:
    """The current UTC time as ISO 8601 with milliseconds and a ``Z``."""
    return utc_now_iso()


def _check_iso8601(value: str) -> str:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not an ISO 8601 timestamp: {value!r}") from exc
    return value


class ProvenanceMetadata(BaseModel):
    """The seed's provenance record, plus optional lineage fields (ETag, line, offset)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    sourceId: str = Field(..., min_length=1)
    sourceType: SourceType
    sourceUri: str = Field(..., min_length=1)
    contentHash: str
    hashAlgorithm: Literal["SHA-256"] = "SHA-256"
    ingestedAt: str
    observedAt: str | None = None
    purpose: str = Field(..., min_length=1)
    classification: str | None = None
    parentId: str | None = None
    transformations: list[str] | None = None
    ingestedBy: str = Field(..., min_length=1)
    batchId: str | None = None
    # Optional lineage beyond the seed: where exactly in the source the record was.
    objectEtag: str | None = None
    lineNumber: int | None = None
    byteOffset: int | None = None
    eventId: str | None = None
    # When a webhook event was received (equal to ingestedAt) and when it was stored.
    receivedAt: str | None = None
    storedAt: str | None = None

    @field_validator("contentHash")
    @classmethod
    def _hex_sha256(cls, value: str) -> str:
        if not _HEX64.match(value):
            raise ValueError("contentHash must be 64 lower-case hex characters (SHA-256)")
        return value

    @field_validator("ingestedAt", "observedAt", "receivedAt", "storedAt")
    @classmethod
    def _iso(cls, value: str | None) -> str | None:
        return None if value is None else _check_iso8601(value)


@dataclass(frozen=True)
class ProvenanceBuilder:
    """The fields a batch shares; :meth:`stamp` adds what is per record."""

    source_id: str
    source_type: SourceType
    source_uri: str
    purpose: str
    ingested_by: str
    classification: str | None = None
    batch_id: str | None = None
    parent_id: str | None = None
    transformations: tuple[str, ...] = ()
    ingested_at: str = field(default_factory=iso_now)

    def common(self) -> dict[str, Any]:
        """The shared fields as a dict with the seed's names (used by columnar writers too)."""
        return {
            "sourceId": self.source_id,
            "sourceType": self.source_type,
            "sourceUri": self.source_uri,
            "hashAlgorithm": HASH_ALGORITHM,
            "ingestedAt": self.ingested_at,
            "purpose": self.purpose,
            "classification": self.classification,
            "parentId": self.parent_id,
            "transformations": list(self.transformations) or None,
            "ingestedBy": self.ingested_by,
            "batchId": self.batch_id,
        }

    def common_columns(self, rows: int) -> dict[str, pa.Array]:
        """:meth:`common` as Arrow columns of ``rows`` values each, for columnar writers.

        Every value is the same in a batch, so each text field is a dictionary array over one
        value (or none, for a missing one): building it costs no per-row work, and Parquet
        stores it as one dictionary entry and a run of zeros instead of encoding and
        compressing the text ``rows`` times.
        Read back, the values are the same; pyarrow presents those fields as
        ``dictionary<values=string, indices=int32>``.
        """
        columns: dict[str, pa.Array] = {}
        for name, value in self.common().items():
            if name == "transformations":
                columns[name] = _repeated_list(value, rows)
            else:
                columns[name] = constant_text_column(value, rows)
        return columns

    def stamp(
        self, content_hash: str, *, observed_at: str | None = None, **lineage: Any
    ) -> dict[str, Any]:
        """Provenance of one record whose content hashes to ``content_hash``."""
        record = self.common()
        record["contentHash"] = content_hash
        record["observedAt"] = observed_at
        record.update({k: v for k, v in lineage.items() if v is not None})
        return record

    def stamp_event(self, event: Any, **lineage: Any) -> tuple[str, dict[str, Any]]:
        """Hash an event's canonical JSON and return ``(contentHash, provenance)``."""
        content_hash = sha256_hex(canonical_json(event))
        return content_hash, self.stamp(content_hash, **lineage)

    def with_lineage(self, parent_id: str, transformation: str) -> ProvenanceBuilder:
        """A builder for records re-derived from ``parent_id`` (a DLQ retry, a re-import)."""
        return ProvenanceBuilder(
            source_id=self.source_id,
            source_type=self.source_type,
            source_uri=self.source_uri,
            purpose=self.purpose,
            ingested_by=self.ingested_by,
            classification=self.classification,
            batch_id=self.batch_id,
            parent_id=parent_id,
            transformations=(*self.transformations, transformation),
        )


def constant_text_column(value: str | None, rows: int) -> pa.Array:
    """``rows`` copies of one text value (or nulls) as a dictionary array over that value."""
    import numpy as np
    import pyarrow as pa

    if value is None:
        return pa.DictionaryArray.from_arrays(pa.nulls(rows, pa.int32()), pa.array([], pa.string()))
    zeros = pa.array(np.zeros(rows, dtype=np.int32))
    return pa.DictionaryArray.from_arrays(zeros, pa.array([value], pa.string()))


def _repeated_list(values: list[str] | None, rows: int) -> pa.Array:
    """``rows`` copies of one list of strings (or nulls), built without a per-row loop."""
    import numpy as np
    import pyarrow as pa

    if values is None:
        return pa.nulls(rows, type=pa.list_(pa.string()))
    width = len(values)
    if width == 1:
        items = pa.repeat(pa.scalar(values[0], pa.string()), rows)
        offsets = pa.array(np.arange(rows + 1, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, items)
    offsets = pa.array(np.arange(0, (rows + 1) * width, width, dtype=np.int32))
    positions = pa.array(np.tile(np.arange(width, dtype=np.int32), rows))
    return pa.ListArray.from_arrays(offsets, pa.array(values, pa.string()).take(positions))


def validate_provenance(value: Any) -> list[str]:
    """Return the problems with a provenance mapping; an empty list means it is valid."""
    if not isinstance(value, dict):
        return ["provenance is not an object"]
    try:
        ProvenanceMetadata.model_validate(value)
    except ValidationError as exc:
        return [
            f"{'.'.join(str(p) for p in e['loc']) or 'provenance'}: {e['msg']}"
            for e in exc.errors()
        ]
    return []


def provenance_json_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`ProvenanceMetadata` (kept in ``docs/``)."""
    return ProvenanceMetadata.model_json_schema()
