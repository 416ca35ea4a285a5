"""Pandera ``str_matches`` checks run straight on RE2 through pyarrow, with pandas' semantics.

pandas scans every value for a newline before each ``str.match`` with a ``$`` in the pattern,
because Python's ``$`` also matches before a final newline and RE2's does not: that scan was a
third of validation time. Here only values that end in a newline go through Python's ``re``.

Patterns that Rust's ``regex`` crate reads as RE2 does run on it, through polars: about half
the CPU of pyarrow's RE2 kernel on the benchmark's two patterns (0.53 against 0.77 and 0.65
against 1.32 ms per MB of CSV, conversion to polars included). The two engines share their
syntax except inside brackets, where Rust also has nested classes and the set operators
``&&``, ``--`` and ``~~``: a pattern with any of those stays on RE2, as does one polars
cannot compile.

A pattern that is one class of ASCII characters repeated, anchored at both ends (ids and
codes: ``^[A-Za-z0-9_-]{1,64}$``), needs no regex engine: a value matches when every byte is
in the class and its length is within the bounds. Python's ``re`` decides which of the 128
ASCII characters the class holds, once, when the schema loads; the compiled
``ingest._speedups.class_run`` checks the values (0.06-0.10 against 0.43-0.56 ms per MB of
CSV for polars, on the benchmark's ``id``; numpy took 0.78). Where it is not built, the
pattern runs as above.
"""

from __future__ import annotations

import re
import warnings
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
from ingest.speedups import native as _speedups  # None where not built: a regex engine
from ingest.speedups import value_buffers

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
    on_polars: bool = False  # matched by Rust's regex (polars) instead of RE2 (pyarrow)
    # For ``^[class]{lo,hi}$``: which bytes the class holds (256 bytes, 0 or 1), lo, and hi
    # (-1: no upper bound). Matched byte by byte, without a regex engine.
    byte_run: tuple[bytes, int, int] | None = None

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
        matched = _byte_run_matches(text, *self.byte_run) if self.byte_run else None
        if matched is None and self.on_polars:
            matched = _polars_matches(text, self.anchored)
        elif matched is None:
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
    on_polars = _rust_reads_it_as_re2(anchored) and _polars_compiles(anchored)
    return StrMatch(
        column,
        pattern,
        anchored,
        str(identifier),
        bool(check.ignore_na),
        on_polars,
        _byte_run(pattern),
    )


# ^[class]quantifier$, the class made of printable ASCII characters, ranges and escaped
# punctuation only (no negation, no \w, \d or \s, no nested or POSIX classes).
_CLASS_RUN = re.compile(r"\^\[((?:\\[!-/:-@\[-`{-~]|[ -Z^-~])+)\](\+|\*|\?|\{(\d+)(,(\d*))?\})?\$")


def _byte_run(pattern: str) -> tuple[bytes, int, int] | None:
    """The bytes, lower and upper bound (-1: none) of a ``^[class]{lo,hi}$`` pattern."""
    found = _CLASS_RUN.fullmatch(pattern)
    if found is None or found.group(1).startswith("^"):
        return None
    body, quantifier, low, comma, high = found.groups()
    try:
        with warnings.catch_warnings():  # "possible set difference": re's reading is the one
            warnings.simplefilter("ignore", FutureWarning)
            one = re.compile(f"[{body}]")
    except re.error:
        return None
    table = bytes(b < 128 and one.fullmatch(chr(b)) is not None for b in range(256))
    if quantifier is None:
        return table, 1, 1
    if quantifier in ("+", "*", "?"):
        return table, 0 if quantifier != "+" else 1, 1 if quantifier == "?" else -1
    lo = int(low)
    hi = lo if comma is None else (int(high) if high else -1)
    if hi != -1 and hi < lo:
        return None
    return table, lo, hi


def _byte_run_matches(text: pa.Array, table: bytes, lo: int, hi: int) -> pa.Array | None:
    """Whether each value of a string array is ``lo`` to ``hi`` bytes, all in ``table``, by
    the compiled ``ingest._speedups``; None where it was not built (a regex engine then).

    Bytes are characters here: a byte over 127 is never in the class, so a value holding
    any non-ASCII character fails, as it does in ``re``.
    """
    found = value_buffers(text)
    if _speedups is None or found is None:
        return None
    data, bounds = found
    matched = np.frombuffer(_speedups.class_run(data, bounds, table, lo, hi), dtype=np.bool_)
    mask = None
    if text.null_count:
        mask = ~np.asarray(text.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    return pa.array(matched, type=pa.bool_(), mask=mask)


def _polars_matches(text: pa.Array, anchored: str) -> pa.Array:
    import polars as pl

    matched = pl.Series(text).str.contains(anchored).to_arrow()
    if isinstance(matched, pa.ChunkedArray):
        matched = matched.combine_chunks()
    return matched


def _polars_compiles(anchored: str) -> bool:
    try:
        _polars_matches(pa.array([""], pa.string()), anchored)
    except Exception:  # polars missing, or a pattern its regex crate refuses: RE2 then
        return False
    return True


def _rust_reads_it_as_re2(pattern: str) -> bool:
    """Whether no bracket expression of ``pattern`` holds a ``[`` (a nested class to Rust) or
    ``&&``, ``--`` or ``~~`` (set operations to Rust). POSIX classes never get here."""
    inside = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if not inside:
            if char == "[":
                inside = True
                i += 1
                if pattern[i : i + 1] == "^":
                    i += 1
                if pattern[i : i + 1] == "]":  # a leading "]" is a literal
                    i += 1
                continue
        elif char == "]":
            inside = False
        elif char == "[" or pattern[i : i + 2] in ("&&", "--", "~~"):
            return False
        i += 1
    return True


def _same_in_re2_and_python(pattern: str) -> bool:
    """Whether RE2 and Python's re agree on ``pattern`` for every input but a final newline."""
    if "(?" in pattern.replace("(?:", "") or "{," in pattern:
        return False  # look-arounds, inline flags, named groups; RE2 reads "{,n}" literally
    if "[:" in pattern:
        return False  # RE2 reads "[[:alpha:]]" as a POSIX class, Python as "[", ":", ... "]"
    return all(not e.isalnum() or e in _SAFE_ESCAPED for e in _ESCAPE.findall(pattern))
