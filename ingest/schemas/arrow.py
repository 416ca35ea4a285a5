"""Pandera checks compiled to vectorised Arrow compute, so a table is validated without pandas.

:class:`~ingest.schemas.model.CsvSchema` converts CSV text to Arrow columns of the schema's
dtypes (:mod:`ingest.schemas.convert`); before this module it then built a pandas frame for
pandera and an Arrow table again for the sink, which cost more than the checks themselves.
The checks the bundled schemas use (``isin``, ``notin``, ``str_length``, ``in_range``, the
comparisons, ``str_matches`` through :mod:`ingest.schemas.regex`, and ``nullable``) are
compiled here into Arrow kernels with pandera's semantics: nulls pass a check that ignores
them, the failure case is the value, and the check is named as pandera names it. A schema
using anything else (custom checks, ``unique``, schema-wide checks, regex column names,
dtypes left to pandera) is not compiled: :func:`compile_checks` returns None and the pandas
path validates it, unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pandera.api.pandas.container import DataFrameSchema

from ingest.schemas.convert import ColumnConversion, Kind
from ingest.schemas.result import FailureLog, RowRejection

__all__ = ["ArrowCheck", "TableValidation", "compile_checks", "run_checks"]

Test = Callable[[Any], Any]  # Arrow column -> boolean column (null where the value is null)
NUMERIC = (Kind.FLOAT, Kind.INTEGER)


@dataclass(frozen=True)
class TableValidation:
    """Validated rows as an Arrow table typed per the schema, and the rejected rows.

    ``valid`` holds the rows that passed, ``positions`` their positions in the input table
    (ascending); ``rejects`` every other row, in position order, with pandera's reasons.
    """

    valid: pa.Table
    positions: np.ndarray
    rejects: list[RowRejection]
    header_error: str | None = None


@dataclass(frozen=True)
class ArrowCheck:
    """One pandera check as an Arrow kernel: True where a value passes."""

    identifier: str  # pandera's name for the check in failure cases
    ignore_na: bool
    test: Test

    def failing(self, values: Any, candidates: np.ndarray | None) -> np.ndarray | None:
        """Rows that fail, as a bool array (None: none fail), among ``candidates`` rows."""
        passed = pc.fill_null(self.test(values), self.ignore_na)
        if pc.all(passed, min_count=0).as_py():
            return None
        failed = ~np.asarray(passed.to_numpy(zero_copy_only=False), dtype=bool)
        if candidates is not None:
            failed &= candidates
        return failed if failed.any() else None


def compile_checks(
    schema: DataFrameSchema, conversions: Mapping[str, ColumnConversion]
) -> dict[str, tuple[bool, list[ArrowCheck]]] | None:
    """Each column's ``(nullable, checks)`` as Arrow kernels, or None if any is not compilable.

    ``schema`` is the validation schema with its ``str_matches`` checks already taken out
    for RE2 (:func:`ingest.schemas.regex.take_str_matches`): those run as they do today.
    """
    if schema.checks or schema.unique or schema.dtype is not None:
        return None
    compiled: dict[str, tuple[bool, list[ArrowCheck]]] = {}
    for key, column in schema.columns.items():
        name = str(key)
        conversion = conversions[name]
        if column.regex or column.unique or conversion.kind is Kind.PANDERA:
            return None
        checks = []
        for check in column.checks:
            arrow = _compile(check, conversion.kind)
            if arrow is None:
                return None
            checks.append(arrow)
        compiled[name] = (bool(column.nullable), checks)
    return compiled


def run_checks(
    compiled: Mapping[str, tuple[bool, list[ArrowCheck]]],
    columns: list[tuple[str, Any]],
    candidates: np.ndarray | None,
    log: FailureLog,
) -> None:
    """Log every failure of ``columns`` (``(name, values)``) among ``candidates`` rows."""
    for name, values in columns:
        # A column the schema does not declare (passed through) has no checks.
        nullable, checks = compiled.get(name, (True, []))
        if not nullable and values.null_count:
            missing = np.asarray(pc.is_null(values).to_numpy(zero_copy_only=False), dtype=bool)
            if candidates is not None:
                missing &= candidates
            positions = np.flatnonzero(missing)
            log.add(positions, name, "not_nullable", [None] * len(positions))
        for check in checks:
            failed = check.failing(values, candidates)
            if failed is not None:
                positions = np.flatnonzero(failed)
                log.add(positions, name, check.identifier, values.take(positions).to_pylist())


def _compile(check: Any, kind: Kind) -> ArrowCheck | None:
    if (
        check.raise_warning
        or check.n_failure_cases is not None
        or check.groupby is not None
        or getattr(check, "element_wise", False)
    ):
        return None  # options whose pandera behaviour this module does not reproduce
    stats = check.statistics or {}
    test = _TESTS.get(check.name, _unknown)(stats, kind)
    if test is None:
        return None
    identifier = check.error if check.error is not None else check.name
    return ArrowCheck(str(identifier), bool(check.ignore_na), test)


def _unknown(stats: dict[str, Any], kind: Kind) -> Test | None:
    return None


def _number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and not (isinstance(value, float) and math.isnan(value))
    )


def _isin(stats: dict[str, Any], kind: Kind) -> Test | None:
    allowed = stats.get("allowed_values")
    return _membership(allowed, kind, negate=False)


def _notin(stats: dict[str, Any], kind: Kind) -> Test | None:
    return _membership(stats.get("forbidden_values"), kind, negate=True)


def _membership(values: Any, kind: Kind, negate: bool) -> Test | None:
    if not isinstance(values, list | tuple | set | frozenset):
        return None
    values = list(values)
    if kind is Kind.TEXT and all(isinstance(v, str) for v in values):
        value_set = pa.array(values, pa.string())
    elif kind in NUMERIC and all(_number(v) for v in values):
        value_set = pa.array([float(v) for v in values], pa.float64())
    else:
        return None

    def test(column: Any) -> Any:
        probe = column if kind is Kind.TEXT else pc.cast(column, pa.float64())
        found = pc.is_in(probe, value_set=value_set, skip_nulls=True)
        found = pc.if_else(pc.is_null(column), pa.scalar(None, pa.bool_()), found)
        return pc.invert(found) if negate else found

    return test


def _str_length(stats: dict[str, Any], kind: Kind) -> Test | None:
    if kind is not Kind.TEXT:
        return None
    low, high, exact = stats.get("min_value"), stats.get("max_value"), stats.get("exact_value")
    bounds = [v for v in (low, high, exact) if v is not None]
    if not bounds or not all(isinstance(v, int) and not isinstance(v, bool) for v in bounds):
        return None

    def within(length: Any) -> Any:
        if exact is not None:
            return pc.equal(length, exact)
        parts = []
        if low is not None:
            parts.append(pc.greater_equal(length, low))
        if high is not None:
            parts.append(pc.less_equal(length, high))
        return parts[0] if len(parts) == 1 else pc.and_(parts[0], parts[1])

    floor, ceiling = (exact, exact) if exact is not None else (low, high)

    def test(column: Any) -> Any:
        # A value of n bytes has from ceil(n / 4) to n characters. Where that whole span is
        # inside the bounds, or wholly below or above them, the byte length (read off the
        # offsets) decides; characters are counted only when some value is in between.
        most = pc.binary_length(column)
        least = pc.divide(pc.add(pc.cast(most, pa.int64()), 3), 4)
        passes, fails = [], []
        if floor is not None:
            passes.append(pc.greater_equal(least, floor))
            fails.append(pc.less(most, floor))
        if ceiling is not None:
            passes.append(pc.less_equal(most, ceiling))
            fails.append(pc.greater(least, ceiling))
        sure = passes[0] if len(passes) == 1 else pc.and_(passes[0], passes[1])
        out = fails[0] if len(fails) == 1 else pc.or_(fails[0], fails[1])
        if pc.all(pc.or_(sure, out), min_count=0).as_py():
            return sure
        return within(pc.utf8_length(column))

    return test


def _in_range(stats: dict[str, Any], kind: Kind) -> Test | None:
    low, high = stats.get("min_value"), stats.get("max_value")
    if kind not in NUMERIC or not (_number(low) and _number(high)):
        return None
    include_low = stats.get("include_min", True)
    include_high = stats.get("include_max", True)

    def test(column: Any) -> Any:
        above = (pc.greater_equal if include_low else pc.greater)(column, low)
        below = (pc.less_equal if include_high else pc.less)(column, high)
        return pc.and_(above, below)

    return test


def _comparison(key: str, kernel: Callable[[Any, Any], Any]) -> Callable[..., Test | None]:
    def build(stats: dict[str, Any], kind: Kind) -> Test | None:
        bound = stats.get(key)
        if kind not in NUMERIC or not _number(bound):
            return None
        return lambda column: kernel(column, bound)

    return build


_TESTS: dict[str, Callable[[dict[str, Any], Kind], Test | None]] = {
    "isin": _isin,
    "notin": _notin,
    "str_length": _str_length,
    "in_range": _in_range,
    "greater_than": _comparison("min_value", pc.greater),
    "greater_than_or_equal_to": _comparison("min_value", pc.greater_equal),
    "less_than": _comparison("max_value", pc.less),
    "less_than_or_equal_to": _comparison("max_value", pc.less_equal),
    "equal_to": _comparison("value", pc.equal),
    "not_equal_to": _comparison("value", pc.not_equal),
}
