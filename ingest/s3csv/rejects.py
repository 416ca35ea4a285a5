"""The DLQ entries of a range's rejected rows, each with its line number and raw bytes.

Two kinds of rows are rejected: records the parser could not read (they carry their raw
bytes already) and rows that failed validation, whose raw bytes are cut from the range's
buffer by their byte offset, up to where the next record starts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ingest.dlq import row_entry
from ingest.s3csv.records import ParsedRange
from ingest.s3csv.spec import RangeSpec
from ingest.schemas import CsvSchema
from ingest.schemas.arrow import TableValidation

__all__ = ["dead_letter_entries", "raw_rows"]


def dead_letter_entries(
    spec: RangeSpec,
    schema: CsvSchema,
    names: tuple[str, ...],
    data: bytes | memoryview,
    base_offset: int,
    parsed: ParsedRange,
    result: TableValidation,
) -> list[Any]:
    """One DLQ row entry per rejected row of ``data`` (a range's records at ``base_offset``)."""
    common: dict[str, Any] = {
        "import_id": spec.importId,
        "schema": schema.name,
        "purpose": spec.purpose,
        "classification": spec.classification,
        "mapping": spec.mapping,
        "header": list(names),
    }
    entries = [
        row_entry(
            object_uri=spec.uri,
            etag=spec.etag or "",
            line=r.line_number,
            offset=r.byte_offset,
            raw=r.raw,
            reason=r.reason,
            **common,
        )
        for r in parsed.rejected
    ]
    if result.rejects:
        raws = raw_rows(data, base_offset, parsed, [r.position for r in result.rejects])
        for reject, raw in zip(result.rejects, raws, strict=True):
            entries.append(
                row_entry(
                    object_uri=spec.uri,
                    etag=spec.etag or "",
                    line=int(parsed.line_numbers[reject.position]),
                    offset=int(parsed.byte_offsets[reject.position]),
                    raw=raw,
                    reason=reject.reason,
                    failure_cases=reject.failure_cases,
                    **common,
                )
            )
    return entries


def raw_rows(
    data: bytes | memoryview, base_offset: int, parsed: ParsedRange, positions: list[int]
) -> list[bytes]:
    """The raw bytes (no line terminator) of the rows at table ``positions``, from ``data``."""
    starts = np.union1d(
        parsed.byte_offsets, np.array([r.byte_offset for r in parsed.rejected], dtype=np.int64)
    )
    bounds = np.append(starts, base_offset + len(data))
    out = []
    for position in positions:
        start = int(parsed.byte_offsets[position])
        stop = int(bounds[np.searchsorted(bounds, start, side="right")])
        raw = bytes(data[start - base_offset : stop - base_offset])
        out.append(raw.rstrip(b"\r\n"))
    return out
