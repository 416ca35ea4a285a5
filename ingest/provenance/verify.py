"""Check stored records: each provenance is valid and each recomputable contentHash matches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.hashing import canonical_json, sha256_hex
from ingest.provenance import validate_provenance
from ingest.sinks import FileSink, StoredRecord

__all__ = ["VerifyReport", "records_at", "verify_records"]


@dataclass
class VerifyReport:
    """What verification found: counts, and the first problems in detail."""

    records: int = 0
    hashes_recomputed: int = 0
    problems: int = 0
    details: list[str] = field(default_factory=list)
    max_details: int = 50

    @property
    def ok(self) -> bool:
        return self.problems == 0

    def fail(self, where: str, message: str) -> None:
        self.problems += 1
        if len(self.details) < self.max_details:
            self.details.append(f"{where}: {message}")


def records_at(path_or_uri: str, s3_client: Any = None) -> Iterator[StoredRecord]:
    """Stored records under a path, ``file://``, ``s3://`` or ``postgresql://`` URI (or a file)."""
    if path_or_uri.startswith(("postgresql://", "postgres://")):
        from ingest.sinks.postgres import PostgresSink

        yield from PostgresSink(path_or_uri).iter_records()
        return
    if "://" not in path_or_uri:
        path = Path(path_or_uri)
        if not path.exists():
            raise FileNotFoundError(f"no such file or directory: {path_or_uri}")
        path_or_uri = f"file://{path.resolve()}"
    if path_or_uri.startswith("file://"):
        local = Path(path_or_uri[len("file://") :])
        if local.is_file():
            from ingest.sinks.file import read_record_file

            for record in read_record_file(str(local), lambda: open(local, "rb")):
                yield StoredRecord(str(local), record)
            return
    yield from FileSink(path_or_uri, s3_client=s3_client).iter_records()


def _recomputable_hash(record: dict[str, Any]) -> str | None:
    # An HTTP event is stored as received, so its canonical JSON is its raw content. A CSV
    # row's raw bytes live in the source object, not in the sink.
    if record["provenance"].get("sourceType") == "HTTP":
        return sha256_hex(canonical_json(record["data"]))
    return None


def verify_records(records: Iterable[StoredRecord]) -> VerifyReport:
    """Validate every record's shape and provenance; recompute hashes where the content is known."""
    report = VerifyReport()
    for stored in records:
        report.records += 1
        where = f"{stored.location} record {report.records}"
        record = stored.record
        if not isinstance(record, dict) or "data" not in record or "provenance" not in record:
            report.fail(where, "record lacks 'data' or 'provenance'")
            continue
        problems = validate_provenance(record["provenance"])
        for problem in problems:
            report.fail(where, problem)
        if problems:
            continue
        expected = _recomputable_hash(record)
        if expected is None:
            continue
        report.hashes_recomputed += 1
        if expected != record["provenance"]["contentHash"]:
            report.fail(where, "contentHash does not match the record's content")
    return report
