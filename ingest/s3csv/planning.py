"""Plan an import: list the objects under a prefix and cut each into record-aligned ranges."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from ingest.config import Settings
from ingest.s3csv.imports import ImportRequest, parse_s3_uri
from ingest.s3csv.pipeline import RangeSpec, range_identity
from ingest.s3csv.ranges import CsvDialect, CsvFormatError, index_boundaries
from ingest.s3csv.reader import ObjectInfo, is_compressed, iter_object, list_objects
from ingest.schemas import SchemaRegistry

__all__ = ["ImportPlan", "plan_import"]

CSV_SUFFIXES = (
    ".csv",
    ".tsv",
    ".txt",
    ".csv.gz",
    ".tsv.gz",
    ".csv.zst",
    ".csv.zstd",
    ".tsv.zst",
    ".gz",
    ".zst",
    ".zstd",
)


@dataclass
class ImportPlan:
    objects: int = 0
    bytes_total: int = 0
    ranges: list[RangeSpec] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _is_csv(key: str) -> bool:
    return key.lower().endswith(CSV_SUFFIXES)


def plan_import(
    settings: Settings,
    s3: Any,
    schemas: SchemaRegistry,
    request: ImportRequest,
    import_id: str,
    ingested_by: str,
    objects: list[ObjectInfo] | None = None,
) -> ImportPlan:
    """List ``request.uri`` page by page and plan its ranges (a pre-pass for large objects).

    ``objects``, when given (the object versions a watch was notified of), replaces the listing.
    """
    bucket, prefix = parse_s3_uri(request.uri)
    schema = schemas.get(request.schema_name)
    cfg = settings.s3csv
    dialect = CsvDialect(cfg.delimiter, cfg.quote_char, cfg.encoding, cfg.header)
    plan = ImportPlan()
    for obj in list_objects(s3, bucket, prefix) if objects is None else objects:
        if not _is_csv(obj.key):
            continue
        plan.objects += 1
        plan.bytes_total += obj.size

        def spec(
            start: int,
            end: int,
            first_line: int,
            header: bytes | None,
            index: int,
            obj: ObjectInfo = obj,
        ) -> RangeSpec:
            return RangeSpec(
                importId=import_id,
                index=index,
                bucket=bucket,
                key=obj.key,
                etag=obj.etag,
                start=start,
                end=end,
                firstLine=first_line,
                headerB64=base64.b64encode(header).decode() if header is not None else None,
                compressed=is_compressed(obj.key),
                schema_name=schema.name,
                schemaVersion=schema.version,
                purpose=request.purpose,
                classification=request.classification,
                mapping=request.mapping,
                ingestedBy=ingested_by,
                rangeId=range_identity(
                    bucket,
                    obj.key,
                    obj.etag,
                    start,
                    end,
                    schema.name,
                    schema.version,
                    request.mapping,
                    request.purpose,
                    request.classification,
                ),
            )

        if is_compressed(obj.key) or obj.size <= cfg.range_size:
            plan.ranges.append(spec(0, obj.size, 1, None, 0))
            continue
        try:
            index = index_boundaries(
                iter_object(s3, bucket, obj.key, 8 << 20, obj.etag),
                obj.size,
                cfg.range_size,
                dialect,
            )
        except CsvFormatError as exc:
            plan.errors.append(f"s3://{bucket}/{obj.key}: {exc}")
            continue
        for r in index.ranges:
            planned = spec(r.start, r.end, r.first_line, index.header, r.index)
            if r.index == 0:
                planned.countedBytes = r.end  # the header before it is this range's too
            plan.ranges.append(planned)
    return plan
