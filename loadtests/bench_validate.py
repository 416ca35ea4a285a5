"""Micro-benchmark of ``CsvSchema.validate``: MB/s of CSV input for an all-text Arrow table of
the ``events_wide`` shape (that of ``loadtests/gen_csv.py``), generated in memory.

Run from the repository root: ``.venv/bin/python loadtests/bench_validate.py [--rows N]``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingest.schemas import CsvSchema, SchemaRegistry
from loadtests.gen_csv import CATEGORIES, DOMAINS, WORDS, generate

__all__ = ["csv_bytes", "main", "make_table", "read_gen_csv"]


def _pick(words: tuple[str, ...] | list[str], indices: np.ndarray) -> pa.Array:
    """``words[indices]`` as Arrow strings, without a Python loop over the rows."""
    dictionary = pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()), pa.array(words))
    return pc.cast(dictionary, pa.string())


def _text(rng: np.random.Generator, counts: np.ndarray) -> pa.Array:
    """Free text of ``counts[i]`` random words in row ``i``."""
    rows, most = len(counts), int(counts.max())
    parts = []
    for k in range(most):
        word = _pick(WORDS, rng.integers(0, len(WORDS), rows))
        parts.append(pc.if_else(pa.array(counts > k), word, pa.scalar(None, pa.string())))
    return pc.binary_join_element_wise(*parts, " ", null_handling="skip")


def _decimal(values: np.ndarray, places: int) -> pa.Array:
    return pc.cast(pa.array(np.round(values, places)), pa.string())


def make_table(rows: int, seed: int = 0) -> pa.Table:
    """An all-text table shaped like ``gen_csv.py`` output, about 120 CSV bytes a row."""
    rng = np.random.default_rng(seed)
    n = np.arange(rows, dtype=np.int64)
    days = (n % 12) * 31 + (n % 28)  # not calendar-exact, only well-formed and spread out
    seconds = (n % 24) * 3600 + (n % 60) * 60 + (n * 7) % 60
    stamps = (
        np.datetime64("2026-01-01T00:00:00", "s")
        + days.astype("timedelta64[D]")
        + seconds.astype("timedelta64[s]")
    )
    stamp_text = pc.replace_substring(pc.cast(pa.array(stamps), pa.string()), " ", "T")
    r = rng.random(rows)
    email_user = pc.binary_join_element_wise(
        _pick(WORDS, n % len(WORDS)), pc.cast(pa.array(n % 1000), pa.string()), ""
    )
    return pa.table(
        {
            "id": pc.binary_join_element_wise(
                "e-", pc.utf8_lpad(pc.cast(pa.array(n), pa.string()), 8, "0"), ""
            ),
            "observed_at": pc.binary_join_element_wise(stamp_text, "Z", ""),
            "category": _pick(CATEGORIES, n % len(CATEGORIES)),
            "title": _text(rng, 1 + n % 2),
            "notes": _text(rng, 2 + n % 4),
            "email": pc.binary_join_element_wise(email_user, _pick(DOMAINS, n % len(DOMAINS)), "@"),
            "score": _decimal(r * 100, 2),
            "latitude": _decimal((r * 7919) % 180 - 90, 4),
            "longitude": _decimal((r * 104729) % 360 - 180, 4),
        }
    )


def read_gen_csv(rows: int, seed: int = 0) -> pa.Table:
    """The real ``gen_csv.py`` output for ``rows`` rows, parsed as all-text (slow to generate)."""
    data = "".join(generate(rows, seed)).encode("utf-8")
    header = data[: data.index(b"\n")].decode().split(",")
    convert = pacsv.ConvertOptions(
        column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=False
    )
    parse = pacsv.ParseOptions(newlines_in_values=True)  # gen_csv puts some in free text
    return pacsv.read_csv(io.BytesIO(data), parse_options=parse, convert_options=convert)


def csv_bytes(table: pa.Table) -> int:
    """The size of ``table`` as CSV: its text, a separator per field, quotes on free text."""
    text = sum(pc.sum(pc.binary_length(column)).as_py() or 0 for column in table.columns)
    quoted = 2 * table.num_rows * sum(name in ("title", "notes") for name in table.column_names)
    return text + table.num_rows * table.num_columns + quoted


def _measure(schema: CsvSchema, table: pa.Table, repeat: int) -> list[float]:
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = schema.validate(table)
        seconds.append(time.perf_counter() - started)
        if result.rejects or result.header_error:
            raise SystemExit(
                f"expected every row valid, got {len(result.rejects)} rejects: "
                f"{result.header_error or result.rejects[0].reason}"
            )
    return seconds


def main(argv: list[str] | None = None) -> None:
    """Print the MB/s of ``validate`` on an all-valid table, best and median of the runs."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--schema", default="events_wide")
    parser.add_argument(
        "--gen-csv",
        action="store_true",
        help="validate the real gen_csv.py output instead (slow to generate)",
    )
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one run")
    args = parser.parse_args(argv)

    schema = SchemaRegistry.load().get(args.schema)
    started = time.perf_counter()
    table = read_gen_csv(args.rows) if args.gen_csv else make_table(args.rows)
    size = csv_bytes(table)
    print(
        f"table: {table.num_rows:,} rows, {table.num_columns} columns, {size / 1e6:.0f} MB "
        f"as CSV, made in {time.perf_counter() - started:.1f} s"
    )
    seconds = _measure(schema, table, args.repeat)
    best, median = min(seconds), statistics.median(seconds)
    print(
        f"validate: best {best:.3f} s = {size / 1e6 / best:.0f} MB/s, "
        f"median {median:.3f} s = {size / 1e6 / median:.0f} MB/s ({args.repeat} runs)"
    )
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(schema.validate, table)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
