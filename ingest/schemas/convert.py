"""Vectorised conversion of CSV text columns to a schema column's dtype, flagging each value
that was present but does not convert, so that only its row is rejected.

Each conversion tries a strict pyarrow cast first (tens of nanoseconds a value) and falls back
to a slower tolerant parser only when that cast fails; the fast path accepts a subset of what
the slow path accepts, with the same results, so the outcome never depends on which ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandera.engines import pandas_engine

__all__ = ["ColumnConversion", "Converted", "Kind", "as_text", "conversion_for", "empty_to_null"]

TRUE_WORDS = pa.array(["true", "t", "yes", "y", "1"])
FALSE_WORDS = pa.array(["false", "f", "no", "n", "0"])
INTEGER_SYNTAX = r"^[+-]?[0-9]+$"
# The range every ``datetime64[ns]`` value must fit; pandas may parse wider dates at coarser units.
NS_MIN = pd.Timestamp.min.tz_localize("UTC")
NS_MAX = pd.Timestamp.max.tz_localize("UTC")


class Kind(Enum):
    """How a column's text becomes its dtype."""

    TEXT = "text"
    FLOAT = "float"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    DATETIME = "datetime"
    DATE = "date"
    PANDERA = "pandera"  # a dtype this module does not convert: pandera coerces it, slowly


@dataclass(frozen=True)
class Converted:
    """A converted column: nulls where the CSV had none or where conversion failed."""

    values: pa.ChunkedArray
    failed: np.ndarray | None  # bool per row, True where a present value did not convert


@dataclass(frozen=True)
class ColumnConversion:
    """How to turn one CSV text column into the pandas dtype a pandera column expects."""

    kind: Kind
    pandas_dtype: Any  # a numpy dtype or a pandas ExtensionDtype
    arrow_type: pa.DataType
    datetime_format: str | None = None

    @property
    def holds_nulls(self) -> bool:
        """Whether the pandas dtype can represent a missing value (numpy int and bool cannot)."""
        return not (isinstance(self.pandas_dtype, np.dtype) and self.pandas_dtype.kind in "iub")

    def convert(self, values: pa.ChunkedArray) -> Converted:
        """Convert text ``values`` (empty strings already null) to :attr:`arrow_type`."""
        if self.kind is Kind.FLOAT:
            return _to_float(values, self.arrow_type)
        if self.kind is Kind.INTEGER:
            return _to_integer(values, self.arrow_type)
        if self.kind is Kind.BOOLEAN:
            return _to_boolean(values)
        if self.kind is Kind.DATETIME:
            if self.datetime_format:
                return _to_datetime_with_format(values, self.arrow_type, self.datetime_format)
            return _to_iso_datetime(values, self.arrow_type)
        if self.kind is Kind.DATE:
            return _to_date(values, self.datetime_format or "%Y-%m-%d")
        return Converted(values, None)

    def to_pandas(self, values: pa.ChunkedArray) -> Any:
        """The converted values as the array pandas stores for :attr:`pandas_dtype`."""
        if self.kind is Kind.DATE:  # pandera's date columns hold datetime.date objects
            return values.to_pandas(date_as_object=True).to_numpy()
        if hasattr(self.pandas_dtype, "__from_arrow__"):
            return self.pandas_dtype.__from_arrow__(values)
        if self.pandas_dtype == np.dtype(object):
            return values.to_numpy()
        return values.to_numpy().astype(self.pandas_dtype, copy=False)


def conversion_for(pandera_dtype: Any, datetime_format: str | None = None) -> ColumnConversion:
    """The conversion into a pandera dtype; ``None`` (a column without dtype) stays text."""
    default_text = pd.StringDtype(na_value=np.nan)
    if isinstance(pandera_dtype, pandas_engine.Date):
        return ColumnConversion(Kind.DATE, np.dtype(object), pa.date32(), datetime_format)
    pandas_dtype = getattr(pandera_dtype, "type", None)
    if pandas_dtype is None or isinstance(pandas_dtype, pd.StringDtype):
        return ColumnConversion(Kind.TEXT, pandas_dtype or default_text, pa.string())
    if isinstance(pandas_dtype, pd.DatetimeTZDtype):
        arrow = pa.timestamp(pandas_dtype.unit, str(pandas_dtype.tz))
        return ColumnConversion(Kind.DATETIME, pandas_dtype, arrow, datetime_format)
    if isinstance(pandas_dtype, np.dtype):
        return _numpy_conversion(pandas_dtype, datetime_format)
    if isinstance(pandas_dtype, pd.BooleanDtype):
        return ColumnConversion(Kind.BOOLEAN, pandas_dtype, pa.bool_())
    if isinstance(pandas_dtype, pd.api.extensions.ExtensionDtype) and pandas_dtype.kind in "iuf":
        kind = Kind.FLOAT if pandas_dtype.kind == "f" else Kind.INTEGER
        arrow = pa.from_numpy_dtype(np.dtype(pandas_dtype.numpy_dtype))
        return ColumnConversion(kind, pandas_dtype, arrow)
    return ColumnConversion(Kind.PANDERA, default_text, pa.string())


def _numpy_conversion(dtype: np.dtype, datetime_format: str | None) -> ColumnConversion:
    if dtype.kind == "f":
        return ColumnConversion(Kind.FLOAT, dtype, pa.from_numpy_dtype(dtype))
    if dtype.kind in "iu":
        return ColumnConversion(Kind.INTEGER, dtype, pa.from_numpy_dtype(dtype))
    if dtype.kind == "b":
        return ColumnConversion(Kind.BOOLEAN, dtype, pa.bool_())
    if dtype.kind == "M":
        unit = np.datetime_data(dtype)[0]
        return ColumnConversion(Kind.DATETIME, dtype, pa.timestamp(unit), datetime_format)
    if dtype.kind == "O":
        return ColumnConversion(Kind.TEXT, dtype, pa.string())
    return ColumnConversion(Kind.PANDERA, pd.StringDtype(na_value=np.nan), pa.string())


def as_text(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """``values`` as Arrow strings, whatever string-like type the reader produced."""
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return values
    return pc.cast(values, pa.string())


def empty_to_null(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """Replace empty strings by nulls: an empty CSV field is a missing value."""
    empty = pc.equal(pc.binary_length(values), 0)
    if not pc.any(empty).as_py():
        return values
    return pc.if_else(empty, pa.scalar(None, values.type), values)


def _failed(values: pa.ChunkedArray, converted: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """Rows whose text was present but whose converted value is null."""
    lost = converted.null_count - values.null_count
    if lost == 0:
        return None
    mask = pc.and_(pc.is_valid(values), pc.is_null(converted))
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


def _chunked(array: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    return array if isinstance(array, pa.ChunkedArray) else pa.chunked_array([array])


def _to_float(values: pa.ChunkedArray, arrow_type: pa.DataType) -> Converted:
    try:
        parsed = pc.cast(values, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        parsed = _tolerant_float(values)
    if pc.any(pc.is_nan(parsed)).as_py():
        # "nan" in a CSV means missing: make it null so nullable-aware dtypes agree with numpy's.
        parsed = pc.if_else(pc.is_nan(parsed), pa.scalar(None, pa.float64()), parsed)
    converted = _chunked(pc.cast(parsed, arrow_type))
    failed = _failed(values, converted)
    if failed is not None:
        failed &= ~_nan_literals(values)
    return Converted(converted, failed if failed is not None and failed.any() else None)


def _tolerant_float(values: pa.ChunkedArray) -> pa.ChunkedArray:
    # pandas accepts surrounding white space, which the strict cast refuses.
    parsed = pd.to_numeric(pd.Series(values.to_numpy(), dtype=object), errors="coerce")
    numbers = np.asarray(parsed, dtype=np.float64)
    return pa.chunked_array([pa.array(numbers, mask=np.isnan(numbers))])


def _nan_literals(values: pa.ChunkedArray) -> np.ndarray:
    folded = pc.utf8_lower(pc.utf8_trim_whitespace(values))
    return np.asarray(pc.fill_null(pc.equal(folded, "nan"), False).to_numpy(), dtype=bool)


def _to_integer(values: pa.ChunkedArray, arrow_type: pa.DataType) -> Converted:
    text = pc.utf8_trim_whitespace(values)
    # A regex first: pyarrow's cast would also take hex ("0x10") and refuse a leading "+".
    well_formed = pc.match_substring_regex(text, INTEGER_SYNTAX)
    cleaned = pc.if_else(
        well_formed, pc.utf8_ltrim(text, characters="+"), pa.scalar(None, values.type)
    )
    try:
        converted = _chunked(pc.cast(cleaned, arrow_type))
    except pa.ArrowInvalid:
        converted = _integers_in_range(cleaned, arrow_type)
    return Converted(converted, _failed(values, converted))


def _integers_in_range(cleaned: pa.ChunkedArray, arrow_type: pa.DataType) -> pa.ChunkedArray:
    """Slow path for a column holding integers outside ``arrow_type``: those become null."""
    info = np.iinfo(arrow_type.to_pandas_dtype())
    numbers = [None if s is None else int(s) for s in cleaned.to_pylist()]
    in_range = [n if n is not None and info.min <= n <= info.max else None for n in numbers]
    return pa.chunked_array([pa.array(in_range, type=arrow_type)])


def _to_boolean(values: pa.ChunkedArray) -> Converted:
    folded = pc.utf8_lower(pc.utf8_trim_whitespace(values))
    null = pa.scalar(None, pa.bool_())
    converted = pc.if_else(
        pc.is_in(folded, value_set=TRUE_WORDS),
        True,
        pc.if_else(pc.is_in(folded, value_set=FALSE_WORDS), False, null),
    )
    converted = _chunked(converted)
    return Converted(converted, _failed(values, converted))


def _to_datetime_with_format(
    values: pa.ChunkedArray, target: pa.TimestampType, fmt: str
) -> Converted:
    parsed = pc.strptime(values, format=fmt, unit=target.unit, error_is_null=True)
    converted = _chunked(_retimezone(parsed, target))
    return Converted(converted, _failed(values, converted))


def _to_iso_datetime(values: pa.ChunkedArray, target: pa.TimestampType) -> Converted:
    """ISO 8601 text: values with an offset are converted to UTC, values without one are UTC."""
    aware, naive = pa.timestamp(target.unit, "UTC"), pa.timestamp(target.unit)
    # pyarrow parses zoned text only into a zoned type and plain text only into a naive one.
    for attempt in (aware, naive) if target.tz else (naive, aware):
        try:
            parsed = pc.cast(values, attempt)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        return Converted(_chunked(_retimezone(parsed, target)), None)
    converted = _chunked(_retimezone(_tolerant_iso_datetime(values, target.unit), target))
    return Converted(converted, _failed(values, converted))


def _tolerant_iso_datetime(values: pa.ChunkedArray, unit: str) -> pa.Array:
    """Slow path for mixed offsets, white space or invalid dates: pandas' ISO 8601 parser."""
    text = pd.Series(values.to_numpy(), dtype=object)
    parsed = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=True)
    if unit == "ns":
        parsed = parsed.where((parsed >= NS_MIN) & (parsed <= NS_MAX))
    return pa.array(parsed.dt.as_unit(unit), type=pa.timestamp(unit, "UTC"))


def _retimezone(parsed: pa.Array | pa.ChunkedArray, target: pa.TimestampType) -> Any:
    if parsed.type.tz is None and target.tz is not None:
        parsed = pc.assume_timezone(parsed, "UTC")
    # Between zoned and naive types this cast only relabels the stored UTC instants.
    return pc.cast(parsed, target)


def _to_date(values: pa.ChunkedArray, fmt: str) -> Converted:
    parsed = pc.strptime(pc.utf8_trim_whitespace(values), format=fmt, unit="s", error_is_null=True)
    converted = _chunked(pc.cast(parsed, pa.date32()))
    return Converted(converted, _failed(values, converted))
