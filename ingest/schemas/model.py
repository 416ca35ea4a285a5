"""A CSV schema: a pandera ``DataFrameSchema`` plus IntelGraph options, validating all-text
Arrow tables from the CSV reader row by row without pandera's slow coercion.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pandera.errors
import pyarrow as pa
import pyarrow.compute as pc
from pandera.api.pandas.container import DataFrameSchema

from ingest.schemas.arrow import TableValidation, compile_checks, run_checks
from ingest.schemas.convert import ColumnConversion, Kind, as_text, conversion_for, empty_to_null
from ingest.schemas.options import IngestOptions, SchemaLoadError, UnknownColumns
from ingest.schemas.regex import take_str_matches
from ingest.schemas.result import FailureCase, FailureLog, ValidationResult, reject_all

__all__ = ["CsvSchema"]


@dataclass(frozen=True)
class _Source:
    """Where one output column's text comes from: a table column, or a constant when added."""

    name: str
    conversion: ColumnConversion
    dtype: str
    index: int | None = None
    default: Any = None


@dataclass
class _Header:
    """A table header resolved against the schema."""

    sources: list[_Source] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    cases: list[FailureCase] = field(default_factory=list)

    def refuse(self, problem: str, check: str, names: Sequence[str]) -> None:
        self.problems.append(f"{problem}: {', '.join(names)}")
        self.cases.extend({"column": n, "check": check, "failure_case": n} for n in names)


class CsvSchema:
    """A named, versioned CSV schema; :meth:`validate` checks one all-text table against it."""

    def __init__(
        self,
        name: str,
        pandera_schema: DataFrameSchema,
        options: IngestOptions,
        source: str | None = None,
    ) -> None:
        self.name = name
        self.pandera_schema = pandera_schema
        self.options = options
        self.source = source or name
        self._conversions = self._plan_conversions()
        self._validation_schema = self._without_coercion()
        self._str_matches = take_str_matches(self._validation_schema, self._conversions)
        self._column_order = {name: i for i, name in enumerate(self.columns)}
        # None: the schema uses a check only pandera runs; validate_table then uses pandas.
        self._arrow_checks = compile_checks(self._validation_schema, self._conversions)

    @classmethod
    def from_pandera(
        cls, name: str, schema: DataFrameSchema, source: str | None = None
    ) -> CsvSchema:
        """Wrap ``schema``, reading its ``metadata["ingest"]``; raises :class:`SchemaLoadError`."""
        origin = source or name
        if not isinstance(schema, DataFrameSchema):
            raise SchemaLoadError(f"{origin}: not a pandas DataFrameSchema: {type(schema)!r}")
        options = IngestOptions.from_metadata(schema.metadata, schema.strict, origin)
        options.check_columns([str(c) for c in schema.columns], origin)
        return cls(name, schema, options, origin)

    @property
    def version(self) -> str:
        """``metadata.ingest.version``, "1" when absent."""
        return self.options.version

    @property
    def unknown_columns(self) -> UnknownColumns:
        """What happens to CSV columns the schema does not declare."""
        return self.options.unknown_columns

    @property
    def observed_at_column(self) -> str | None:
        """The column holding when a row was observed, for provenance."""
        return self.options.observed_at_column

    @property
    def key_fields(self) -> list[str] | None:
        """Dedup key fields that override the configured ones; None: use the configuration."""
        return self.options.key_fields

    @property
    def columns(self) -> list[str]:
        """The declared column names (regex columns as their patterns), in schema order."""
        return [str(name) for name in self.pandera_schema.columns]

    def __repr__(self) -> str:
        return f"CsvSchema(name={self.name!r}, version={self.version!r}, source={self.source!r})"

    def output_columns(
        self, header: Sequence[str], mapping: Mapping[str, str] | None = None
    ) -> list[str]:
        """The columns ``validate`` puts in ``valid`` for this CSV ``header``; [] if refused."""
        resolved = self._resolve(_mapped(header, mapping))
        return [] if resolved.problems else [s.name for s in resolved.sources]

    def validate(
        self, table: pa.Table, mapping: Mapping[str, str] | None = None
    ) -> ValidationResult:
        """Validate every row of an all-text ``table`` whose header is renamed by ``mapping``."""
        header = self._resolve(_mapped(table.column_names, mapping))
        if header.problems:
            error = "; ".join(header.problems)
            return ValidationResult(
                self._empty_frame(), reject_all(table.num_rows, error, header.cases), error
            )
        log = FailureLog(self._column_order)
        columns, convertible = self._convert(table, header.sources, log)
        frame = _frame(columns, convertible, table.num_rows)
        for str_match in self._str_matches:
            str_match.run(frame, log)
        try:
            self._validation_schema.validate(frame, lazy=True, inplace=True)
        except pandera.errors.SchemaErrors as errors:
            log.add_pandera(errors.failure_cases)
        if not log:
            return ValidationResult(frame)
        rejects = log.rejections(frame.index)
        rejected = np.fromiter((r.position for r in rejects), np.int64, len(rejects))
        return ValidationResult(frame[~frame.index.isin(rejected)], rejects)

    def validate_table(
        self, table: pa.Table, mapping: Mapping[str, str] | None = None
    ) -> TableValidation:
        """:meth:`validate`, with the valid rows as an Arrow table: for schemas whose checks
        compile to Arrow kernels (:mod:`ingest.schemas.arrow`), no pandas frame is built at all.
        Rows, reasons and failure cases are the same as :meth:`validate` gives."""
        header = self._resolve(_mapped(table.column_names, mapping))
        if header.problems or self._arrow_checks is None:
            result = self.validate(table, mapping)
            valid = pa.Table.from_pandas(result.valid, preserve_index=False)
            return TableValidation(
                valid, result.valid_positions, result.rejects, result.header_error
            )
        log = FailureLog(self._column_order)
        columns, convertible = self._convert(table, header.sources, log)
        by_name = {source.name: values for source, values in columns}
        for str_match in self._str_matches:  # before the other checks, as validate() runs them
            values = by_name.get(str_match.column)
            failed = None if values is None else str_match.failing(values)
            if failed is not None and convertible is not None:
                failed &= convertible
            if failed is not None and failed.any():
                positions = np.flatnonzero(failed)
                texts = values.take(positions).to_pylist()  # type: ignore[union-attr]
                log.add(positions, str_match.column, str_match.identifier, texts)
        run_checks(self._arrow_checks, list(by_name.items()), convertible, log)
        data = pa.table(by_name) if by_name else pa.table({"": pa.nulls(table.num_rows)})
        keep = np.ones(table.num_rows, dtype=bool) if convertible is None else convertible.copy()
        rejects = log.rejections(np.flatnonzero(keep)) if log else []
        if rejects:
            keep[[r.position for r in rejects]] = False
        if not keep.all():
            data = data.filter(pa.array(keep))
        if not by_name:
            data = data.drop_columns([""])
        return TableValidation(data, np.flatnonzero(keep).astype(np.int64), rejects)

    def _plan_conversions(self) -> dict[str, ColumnConversion]:
        plans = {}
        for name, column in self.pandera_schema.columns.items():
            dtype = column.dtype or self.pandera_schema.dtype
            conversion = conversion_for(dtype, self.options.datetime_formats.get(name))
            formatted = name in self.options.datetime_formats
            if formatted and conversion.kind not in (Kind.DATETIME, Kind.DATE):
                raise SchemaLoadError(
                    f"{self.source}: metadata.ingest.datetimeFormats names "
                    f"{name!r}, which is not a datetime or date column"
                )
            if column.nullable and not conversion.holds_nulls:
                raise SchemaLoadError(
                    f"{self.source}: column {name!r} is nullable but {dtype} "
                    "cannot hold a missing value; use its nullable form "
                    "(Int64, boolean)"
                )
            plans[str(name)] = conversion
        if self.pandera_schema.index is not None:
            raise SchemaLoadError(
                f"{self.source}: a CSV schema cannot declare an index; "
                "rows are indexed by their position in the CSV"
            )
        return plans

    def _without_coercion(self) -> DataFrameSchema:
        """The pandera schema to run on converted columns: header rules and coercion removed."""
        schema = copy.deepcopy(self.pandera_schema)
        # Header rules are enforced by _resolve; pandera would report them without a row.
        schema.strict = False
        schema.ordered = False
        schema.unique_column_names = False
        schema.add_missing_columns = False
        schema.drop_invalid_rows = False
        schema.coerce = False
        for name, column in schema.columns.items():
            # Only dtypes schema_convert cannot produce are left to pandera, which is slow.
            column.coerce = self._conversions[str(name)].kind is Kind.PANDERA
        return schema

    def _resolve(self, names: list[str]) -> _Header:
        header = _Header()
        duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
        if duplicates:
            header.refuse("duplicate columns", "unique_column_names", duplicates)
        found: dict[str, list[int]] = {}
        unknown = []
        for index, name in enumerate(names):
            declared = self._declared_as(name)
            if declared is None:
                unknown.append(index)
            else:
                found.setdefault(declared, []).append(index)
        self._plan_sources(header, names, found)
        in_header = [s.index for s in header.sources if s.index is not None]
        if self.pandera_schema.ordered and in_header != sorted(in_header):
            header.refuse("columns out of order, expected", "column_ordered", self.columns)
        if unknown and self.unknown_columns is UnknownColumns.STRICT:
            header.refuse("unknown columns", "column_in_schema", [names[i] for i in unknown])
        elif self.unknown_columns is UnknownColumns.PASSTHROUGH:
            text = conversion_for(None)
            header.sources.extend(_Source(names[i], text, "str", i) for i in unknown)
        return header

    def _declared_as(self, name: str) -> str | None:
        """The schema column ``name`` belongs to: its own, or the first regex it matches."""
        columns = self.pandera_schema.columns
        if name in columns and not columns[name].regex:
            return name
        for key, column in columns.items():
            if column.regex and re.match(str(key), name):
                return str(key)
        return None

    def _plan_sources(self, header: _Header, names: list[str], found: dict[str, list[int]]) -> None:
        """Declared columns in schema order (regex ones once per match); missing ones refused."""
        missing = []
        for key, column in self.pandera_schema.columns.items():
            name, conversion = str(key), self._conversions[str(key)]
            dtype = str(column.dtype or self.pandera_schema.dtype or "str")
            indexes = found.get(name, [])
            header.sources.extend(_Source(names[i], conversion, dtype, i) for i in indexes)
            if indexes:
                continue
            if column.regex:
                if column.required:
                    missing.append(name)
            elif self.pandera_schema.add_missing_columns:
                header.sources.append(_Source(name, conversion, dtype, None, column.default))
            elif column.required:
                missing.append(name)
        if missing:
            header.refuse("missing required columns", "column_in_dataframe", missing)

    def _convert(
        self, table: pa.Table, sources: list[_Source], log: FailureLog
    ) -> tuple[list[tuple[_Source, pa.ChunkedArray]], np.ndarray | None]:
        """Each source's converted values, and which rows converted cleanly (None: all did)."""
        columns = []
        refused: np.ndarray | None = None
        for source in sources:
            text = empty_to_null(as_text(_text_of(table, source)))
            converted = source.conversion.convert(text)
            failed = converted.failed
            if failed is not None:
                positions = np.flatnonzero(failed)
                log.add(
                    positions,
                    source.name,
                    f"dtype('{source.dtype}')",
                    text.take(positions).to_pylist(),
                )
            if not source.conversion.holds_nulls and converted.values.null_count:
                missing = np.asarray(pc.is_null(converted.values).to_numpy(), dtype=bool)
                if failed is not None:
                    missing &= ~failed
                positions = np.flatnonzero(missing)
                log.add(positions, source.name, "not_nullable", [None] * len(positions))
                failed = missing if failed is None else failed | missing
            if failed is not None:
                refused = failed if refused is None else refused | failed
            columns.append((source, converted.values))
        return columns, None if refused is None else ~refused

    def _empty_frame(self) -> pd.DataFrame:
        data = {
            name: pd.Series([], dtype=conversion.pandas_dtype)
            for name, conversion in self._conversions.items()
            if not self.pandera_schema.columns[name].regex
        }
        return pd.DataFrame(data, index=pd.Index([], dtype=np.int64))


def _mapped(header: Sequence[str], mapping: Mapping[str, str] | None) -> list[str]:
    """The header with CSV names renamed by ``mapping``; names it does not list are kept."""
    return [mapping.get(name, name) for name in header] if mapping else list(header)


def _text_of(table: pa.Table, source: _Source) -> pa.ChunkedArray:
    if source.index is not None:
        return table.column(source.index)
    if source.default is None:
        return pa.chunked_array([pa.nulls(table.num_rows, pa.string())])
    return pa.chunked_array([pa.repeat(pa.scalar(str(source.default)), table.num_rows)])


def _frame(
    columns: list[tuple[_Source, pa.ChunkedArray]], convertible: np.ndarray | None, rows: int
) -> pd.DataFrame:
    """The converted columns as a frame indexed by input position, minus unconvertible rows."""
    if convertible is None:
        index: pd.Index = pd.RangeIndex(rows)
        data = {s.name: s.conversion.to_pandas(values) for s, values in columns}
    else:
        index = pd.Index(np.flatnonzero(convertible), dtype=np.int64)
        keep = pa.array(convertible)
        data = {s.name: s.conversion.to_pandas(values.filter(keep)) for s, values in columns}
    return pd.DataFrame(data, index=index, copy=False)
