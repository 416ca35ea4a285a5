"""Pandera ``str_matches`` checks run straight on RE2 through pyarrow, with pandas' semantics.

pandas scans every value for a newline before each ``str.match`` with a ``$`` in the pattern,
because Python's ``$`` also matches before a final newline and RE2's does not: that scan was a
third of validation time. Here only values that end in a newline go through Python's ``re``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandera.api.pandas.container import DataFrameSchema

from ingest.schemas.convert import ColumnConversion, Kind
from ingest.schemas.result import FailureLog

__all__ = ["StrMatch", "take_str_matches"]

# Escapes RE2 and Python read alike on any text: escaped punctuation and a few control chars.
# \s, \w, \d, \b and friends differ (Unicode, "\x0b"), so such patterns stay with pandas.
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_SAFE_ESCAPED = frozenset("tnrfv")


@dataclass(frozen=True)
class StrMatch:
    """One ``str_matches`` check taken out of the pandera schema to run on RE2."""

    column: str
    pattern: str  # as written in the schema, for Python's re
    anchored: str  # the RE2 form of ``re.match``: anchored at the start only
    identifier: str  # pandera's name for the check in failure cases
    ignore_na: bool

    def run(self, frame: pd.DataFrame, log: FailureLog) -> None:
        """Record a failure for every row of ``frame`` whose value does not match."""
        if self.column not in frame.columns:
            return
        text = pa.array(frame[self.column].array)  # zero-copy for pyarrow-backed strings
        failing = self.failing(text)
        if failing is None:
            return
        values = text.filter(pa.array(failing)).to_pylist()
        log.add(frame.index[failing], self.column, self.identifier, values)

    def failing(self, text: Any) -> np.ndarray | None:
        """A bool per value of the Arrow string column ``text``: True where it does not
        match; None when every value matches."""
        if isinstance(text, pa.ChunkedArray):
            text = text.combine_chunks() if text.num_chunks != 1 else text.chunk(0)
        matched = pc.match_substring_regex(text, self.anchored)
        trailing = pc.fill_null(pc.ends_with(text, "\n"), False)
        if pc.any(trailing).as_py():
            matched = self._python_match_where(text, matched, trailing)
        passed = pc.fill_null(matched, self.ignore_na)
        if pc.all(passed, min_count=0).as_py():
            return None
        return np.asarray(pc.invert(passed).to_numpy(zero_copy_only=False), dtype=bool)

    def _python_match_where(self, text: Any, matched: Any, where: Any) -> Any:
        """``matched`` with Python's ``re.match`` answer where ``where`` is true."""
        compiled = re.compile(self.pattern)
        rows = np.flatnonzero(np.asarray(where.to_numpy(zero_copy_only=False), dtype=bool))
        answers = matched.to_numpy(zero_copy_only=False).astype(object)
        for row, value in zip(rows, text.take(pa.array(rows)).to_pylist(), strict=True):
            answers[row] = compiled.match(value) is not None
        return pa.array(answers, type=pa.bool_())


def take_str_matches(
    schema: DataFrameSchema, conversions: Mapping[str, ColumnConversion]
) -> list[StrMatch]:
    """Take out of ``schema`` (in place) the ``str_matches`` checks RE2 runs exactly."""
    taken = []
    for name, column in schema.columns.items():
        conversion = conversions[str(name)]
        text_column = conversion.kind is Kind.TEXT and isinstance(
            conversion.pandas_dtype, pd.StringDtype
        )
        if column.regex or not text_column:
            continue
        kept = []
        for check in column.checks:
            fast = _str_match(str(name), check)
            if fast is None:
                kept.append(check)
            else:
                taken.append(fast)
        column.checks = kept
    return taken


def _str_match(column: str, check: Any) -> StrMatch | None:
    pattern = (check.statistics or {}).get("pattern")
    if not isinstance(pattern, str) or not _same_in_re2_and_python(pattern):
        return None
    if (
        check.name != "str_matches"
        or check.raise_warning
        or check.n_failure_cases is not None
        or check.groupby is not None
    ):
        return None  # options whose pandera behaviour this module does not reproduce
    anchored = f"^({pattern[1:] if pattern.startswith('^') else pattern})"
    try:
        pc.match_substring_regex(pa.array([""], pa.string()), anchored)
    except pa.ArrowInvalid:
        return None
    identifier = check.error if check.error is not None else check.name
    return StrMatch(column, pattern, anchored, str(identifier), bool(check.ignore_na))


def _same_in_re2_and_python(pattern: str) -> bool:
    """Whether RE2 and Python's re agree on ``pattern`` for every input but a final newline."""
    if "(?" in pattern.replace("(?:", "") or "{," in pattern:
        return False  # look-arounds, inline flags, named groups; RE2 reads "{,n}" literally
    return all(not e.isalnum() or e in _SAFE_ESCAPED for e in _ESCAPE.findall(pattern))
