"""Provenance: where every stored record came from, who brought it in, and why.

``ProvenanceMetadata`` carries the seed's field names exactly. Connectors never build it by
hand: they make one :class:`ProvenanceBuilder` per batch and stamp each record with it, so the
shared fields cannot drift between connectors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ingest.hashing import HASH_ALGORITHM, canonical_json, sha256_hex

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
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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

    @field_validator("contentHash")
    @classmethod
    def _hex_sha256(cls, value: str) -> str:
        if not _HEX64.match(value):
            raise ValueError("contentHash must be 64 lower-case hex characters (SHA-256)")
        return value

    @field_validator("ingestedAt", "observedAt")
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
