"""The table a range stores: its validated rows in ``data`` and their provenance beside them.

Everything here is columnar: no per-row Python work. What is the same for every row of a
range (source, purpose, batch, transformations) is a dictionary over one value, which the
Parquet writer stores as one dictionary entry and a run of indices; what differs row by row
(contentHash, observedAt, lineNumber, byteOffset) comes straight from the parse.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.provenance import ProvenanceBuilder, constant_text_column
from ingest.s3csv.records import ParsedRange
from ingest.s3csv.spec import RangeSpec
from ingest.schemas import CsvSchema
from ingest.schemas.arrow import TableValidation

__all__ = ["output_table", "transformations"]


def output_table(
    spec: RangeSpec,
    schema: CsvSchema,
    parsed: ParsedRange,
    result: TableValidation,
    positions: np.ndarray,
    keep: np.ndarray,
) -> pa.Table:
    """Rows ``positions`` of ``parsed`` (``keep`` of the validated rows) with provenance."""
    n = len(positions)
    every_row = n == parsed.table.num_rows  # the common case: no take() needed

    def pick(array: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
        # Chunked columns stay chunked: Table.to_struct_array copes, a copy costs.
        return array if every_row else array.take(pa.array(positions, type=pa.int64()))

    # Validated rows are Arrow already (schema.validate_table): no pandas round trip.
    valid = result.valid if result.valid.num_rows == n else result.valid.filter(pa.array(keep))
    builder = ProvenanceBuilder(
        source_id=f"{spec.bucket}/{spec.key}",
        source_type="S3",
        source_uri=spec.uri,
        purpose=spec.purpose,
        classification=spec.classification,
        ingested_by=spec.ingestedBy,
        batch_id=spec.rangeId,
        parent_id=spec.parentId,
        transformations=transformations(spec, schema),
    )
    columns = builder.common_columns(n)
    if builder.transformations:
        columns["transformations"] = _repeated_steps(builder.transformations, n)
    columns["contentHash"] = pick(parsed.content_hashes)
    columns["observedAt"] = _observed_at(schema, spec, parsed, valid, pick, n)
    columns["objectEtag"] = constant_text_column(spec.etag, n)
    columns["lineNumber"] = _int64s(parsed.line_numbers, positions, every_row)
    columns["byteOffset"] = _int64s(parsed.byte_offsets, positions, every_row)
    provenance = _struct_column(columns, n)
    # Columns of a table may be chunked differently: no copy into one chunk needed.
    if valid.num_columns and n:
        record: pa.Array | pa.ChunkedArray = valid.to_struct_array()
    elif valid.num_columns:
        record = pa.StructArray.from_arrays(
            [pa.array([], type=f.type) for f in valid.schema], valid.column_names
        )
    else:
        record = pa.array([{}] * n)
    return pa.table({"data": record, "provenance": provenance})


def transformations(spec: RangeSpec, schema: CsvSchema) -> tuple[str, ...]:
    """The processing steps a range's rows went through, as provenance names them."""
    steps = [f"schema:{schema.name}@{schema.version}"]
    if spec.mapping:
        steps.append("mapping:" + ",".join(f"{k}->{v}" for k, v in sorted(spec.mapping.items())))
    if spec.parentId:
        steps.append("dlq-retry")
    return tuple(steps)


def _repeated_steps(steps: tuple[str, ...] | list[str], rows: int) -> pa.Array:
    """``rows`` copies of the list ``steps``, its items a dictionary (read back: strings).

    Every row of a range has the same transformations: as a dictionary the Parquet writer
    stores each step once and a run of indices, instead of encoding and compressing the
    text once a row (measured: about 0.3 ms of CPU per MB of input).
    """
    width = len(steps)
    offsets = pa.array(np.arange(0, (rows + 1) * width, width, dtype=np.int32))
    indices = pa.array(np.tile(np.arange(width, dtype=np.int32), rows))
    items = pa.DictionaryArray.from_arrays(indices, pa.array(list(steps), pa.string()))
    return pa.ListArray.from_arrays(offsets, items)


def _observed_at(
    schema: CsvSchema, spec: RangeSpec, parsed: ParsedRange, valid: Any, pick: Any, n: int
) -> pa.Array:
    column = schema.observed_at_column
    if column is None or n == 0 or column not in valid.column_names:
        return pa.nulls(n, type=pa.string())
    source = {v: k for k, v in spec.mapping.items()}.get(column, column)
    custom = column in (schema.options.datetime_formats or {})
    if not custom and source in parsed.table.column_names:
        # The source text already passed ISO 8601 parsing; formatting it again costs
        # microseconds a row, so provenance keeps the observation time as written.
        return pick(parsed.table.column(source))
    return _format_timestamps(valid.column(column))


def _int64s(values: np.ndarray, positions: np.ndarray, every_row: bool) -> pa.Array:
    """Per-row lineage numbers of the stored rows, without a copy when every row is stored."""
    chosen = values if every_row else values[positions]
    return pa.array(np.asarray(chosen, dtype=np.int64), type=pa.int64())


def _struct_column(columns: dict[str, Any], n: int) -> pa.Array | pa.ChunkedArray:
    """One struct column of ``columns``, which may be arrays or differently chunked columns."""
    if n == 0:
        arrays = [
            c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in columns.values()
        ]
        return pa.StructArray.from_arrays(arrays, list(columns))
    return pa.table(columns).to_struct_array()


def _format_timestamps(values: Any) -> pa.Array:
    array = values if isinstance(values, pa.ChunkedArray | pa.Array) else pa.array(values)
    if not pa.types.is_timestamp(array.type):
        return pc.cast(array, pa.string())
    text = pc.strftime(array, format="%Y-%m-%dT%H:%M:%S")
    return pc.binary_join_element_wise(text, pa.scalar("Z"), "")
