"""What validating a CSV table against a schema produces: the valid rows as a typed frame and,
for every other row, its position, a reason a person can act on and JSON-ready failure cases.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "FailureLog",
    "RowRejection",
    "ValidationResult",
    "describe_failure",
    "plain_value",
    "reject_all",
]

FailureCase = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RowRejection:
    """One input row that failed its schema.

    ``failure_cases`` holds one ``{"column", "check", "failure_case"}`` dict per failure, with
    plain JSON-serialisable values; rows rejected for one shared cause (a header problem, a
    table-wide check) share one list, so treat it as read-only.
    """

    position: int
    reason: str
    failure_cases: list[FailureCase]


@dataclass(frozen=True)
class ValidationResult:
    """The outcome of :meth:`CsvSchema.validate` for one table.

    ``valid`` holds the rows that passed, typed per the schema, and its index is their row
    positions in the input table (``valid_positions``); every other row is in ``rejects``,
    in position order. ``header_error`` is set when the header itself is unusable, which
    rejects every row.
    """

    valid: pd.DataFrame
    rejects: list[RowRejection] = field(default_factory=list)
    header_error: str | None = None

    @property
    def valid_positions(self) -> np.ndarray:
        """Positions in the input table of the rows of :attr:`valid`, ascending, int64."""
        return np.asarray(self.valid.index, dtype=np.int64)

    @property
    def rejected_positions(self) -> np.ndarray:
        """Positions in the input table of the rejected rows, ascending, int64."""
        return np.fromiter(
            (r.position for r in self.rejects), dtype=np.int64, count=len(self.rejects)
        )


def plain_value(value: Any) -> Any:
    """``value`` as a JSON-serialisable plain Python value (non-finite floats become text)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dt.date | dt.time):  # pandas Timestamps are datetimes too
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return str(value)


def _quoted(value: Any) -> str:
    if value is None:
        return "null"
    if not isinstance(value, str):
        return str(value)
    return repr(value if len(value) <= 80 else value[:77] + "...")


def describe_failure(column: str | None, check: str, value: Any) -> str:
    """A human-readable reason for one failure case, naming the column and the value."""
    where = f"column {column!r}: " if column is not None else ""
    if check == "not_nullable":
        return f"{where}missing value"
    if check == "field_uniqueness":
        return f"{where}duplicate value {_quoted(value)}"
    if check.startswith(("dtype(", "coerce_dtype(")):
        dtype = check.split("(", 1)[1].rstrip(")").strip("'")
        return f"{where}value {_quoted(value)} is not a {dtype}"
    return f"{where}value {_quoted(value)} failed {check}"


class FailureLog:
    """Failure cases collected per row position, turned into rejections in position order."""

    def __init__(self, column_order: Mapping[str, int] | None = None) -> None:
        self._order = dict(column_order or {})
        self._by_position: defaultdict[int, list[FailureCase]] = defaultdict(list)
        self._shared: list[FailureCase] = []

    def __bool__(self) -> bool:
        return bool(self._by_position) or bool(self._shared)

    def add(
        self, positions: Iterable[int], column: str | None, check: str, values: Iterable[Any]
    ) -> None:
        """Record that ``check`` failed on ``column`` at each position with its value."""
        for position, value in zip(positions, values, strict=True):
            case = {"column": column, "check": check, "failure_case": plain_value(value)}
            self._by_position[int(position)].append(case)

    def add_table_wide(self, column: str | None, check: str, value: Any) -> None:
        """Record a failure that belongs to no single row: it rejects every row validated."""
        self._shared.append({"column": column, "check": check, "failure_case": plain_value(value)})

    def add_pandera(self, failure_cases: pd.DataFrame) -> None:
        """Record pandera's ``SchemaErrors.failure_cases`` (its ``index`` holds positions)."""
        columns = (
            failure_cases[name].tolist() for name in ("index", "column", "check", "failure_case")
        )
        for index, column, check, value in zip(*columns, strict=True):
            column = None if column is None or column is pd.NA else str(column)
            if index is None or index is pd.NA:
                self.add_table_wide(column, str(check), value)
            else:
                self.add([int(index)], column, str(check), [value])

    def rejections(self, validated: Sequence[int] | np.ndarray) -> list[RowRejection]:
        """Rejections in position order; table-wide failures reject every ``validated`` row."""
        by_position: dict[int, list[FailureCase]] = dict(self._by_position)
        if self._shared:
            for position in validated:
                by_position.setdefault(int(position), []).extend(self._shared)
        for cases in by_position.values():
            if len(cases) > 1:  # checks run in several passes; a reason reads in column order
                cases.sort(key=lambda case: self._order.get(case["column"], len(self._order)))
        return [
            RowRejection(position, _reason(cases), cases)
            for position, cases in sorted(by_position.items())
        ]


def _reason(cases: list[FailureCase]) -> str:
    return "; ".join(describe_failure(c["column"], c["check"], c["failure_case"]) for c in cases)


def reject_all(count: int, reason: str, cases: list[FailureCase]) -> list[RowRejection]:
    """Every row of a table rejected for one shared cause, such as a header problem."""
    return [RowRejection(position, reason, cases) for position in range(count)]
