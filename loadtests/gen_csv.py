"""Write a deterministic entities CSV for load tests: 9 columns, about 120 bytes a row.

Columns: id, ISO timestamp, category, two quoted free-text columns (commas, escaped
quotes and, at ``--newline-rate``, embedded newlines), e-mail and three floats.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterator
from pathlib import Path

__all__ = ["generate", "main"]

HEADER = "id,observed_at,category,title,notes,email,score,latitude,longitude"
CATEGORIES = ("person", "organisation", "vessel", "aircraft", "location", "event")
WORDS = (
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliett",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "harbour",
    "cargo",
    "route",
    "signal",
    "report",
    "sighting",
    "contact",
    "transfer",
    "meeting",
    "account",
)
DOMAINS = ("example.org", "mail.example.com", "example.net")
# Rows are written in batches so the generator does not dominate a load test's set-up.
BATCH_ROWS = 10_000


def _text(rng: random.Random, words: int, newline_rate: float, tricky: float | None) -> str:
    picked = rng.choices(WORDS, k=words)
    roll = rng.random()
    # Shares of the field's roll: a comma, an escaped quote pair, a newline.
    comma, quote = (0.15, 0.25) if tricky is None else (tricky * 0.4, tricky * 0.8)
    newline = quote + newline_rate if tricky is None else tricky
    if roll < comma:
        picked[0] += ","
    elif roll < quote:
        picked[-1] = f'""{picked[-1]}""'  # an escaped quote pair inside the quoted field
    elif roll < newline:
        picked[0] += "\n"
    if tricky is not None and roll >= newline:
        return " ".join(picked)  # plain text needs no quotes
    return '"' + " ".join(picked) + '"'


def _row(rng: random.Random, n: int, newline_rate: float, tricky: float | None = None) -> str:
    ts = f"2026-{1 + n % 12:02d}-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:{(n * 7) % 60:02d}Z"
    r = rng.random()
    return ",".join(
        (
            f"e-{n:08d}",
            ts,
            CATEGORIES[n % len(CATEGORIES)],
            _text(rng, 1 + n % 2, newline_rate, tricky),
            _text(rng, 2 + n % 4, newline_rate, tricky),
            f"{WORDS[n % len(WORDS)]}{n % 1000}@{DOMAINS[n % len(DOMAINS)]}",
            f"{r * 100:.2f}",
            f"{(r * 7919) % 180 - 90:.4f}",
            f"{(r * 104729) % 360 - 180:.4f}",
        )
    )


def generate(
    rows: int,
    seed: int = 0,
    newline_rate: float = 0.0005,
    line_ending: str = "\n",
    tricky_rate: float | None = None,
) -> Iterator[str]:
    """Yield the CSV text in batches: the header first, then ``rows`` rows; same seed, same text.

    ``tricky_rate`` (None: the historic mix, a quarter of the text fields quoted with a comma
    or an escaped quote) is the share of text fields holding a comma, an escaped quote pair
    or a newline (2:2:1); the other fields are then written unquoted.
    """
    rng = random.Random(seed)
    yield HEADER + line_ending
    for batch_start in range(0, rows, BATCH_ROWS):
        batch = [
            _row(rng, n, newline_rate, tricky_rate)
            for n in range(batch_start, min(rows, batch_start + BATCH_ROWS))
        ]
        yield line_ending.join(batch) + line_ending


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python loadtests/gen_csv.py OUT --rows N [--seed S]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--newline-rate",
        type=float,
        default=0.0005,
        help="chance that a free-text field holds a newline",
    )
    parser.add_argument("--crlf", action="store_true", help="end lines with CRLF")
    parser.add_argument(
        "--tricky-rate",
        type=float,
        default=None,
        help="share of text fields with a comma, escaped quote or newline (2:2:1); the rest "
        "unquoted (default: the historic mix, ~25%% quoted with a comma or escaped quote)",
    )
    args = parser.parse_args(argv)
    ending = "\r\n" if args.crlf else "\n"
    with args.out.open("w", encoding="utf-8", newline="") as out:
        for text in generate(args.rows, args.seed, args.newline_rate, ending, args.tricky_rate):
            out.write(text)


if __name__ == "__main__":
    main()
