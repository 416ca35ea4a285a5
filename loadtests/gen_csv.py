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


def _text(rng: random.Random, words: int, newline_rate: float) -> str:
    picked = rng.choices(WORDS, k=words)
    roll = rng.random()
    if roll < 0.15:
        picked[0] += ","
    elif roll < 0.25:
        picked[-1] = f'""{picked[-1]}""'  # an escaped quote pair inside the quoted field
    elif roll < 0.25 + newline_rate:
        picked[0] += "\n"
    return '"' + " ".join(picked) + '"'


def _row(rng: random.Random, n: int, newline_rate: float) -> str:
    ts = f"2026-{1 + n % 12:02d}-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:{(n * 7) % 60:02d}Z"
    r = rng.random()
    return ",".join(
        (
            f"e-{n:08d}",
            ts,
            CATEGORIES[n % len(CATEGORIES)],
            _text(rng, 1 + n % 2, newline_rate),
            _text(rng, 2 + n % 4, newline_rate),
            f"{WORDS[n % len(WORDS)]}{n % 1000}@{DOMAINS[n % len(DOMAINS)]}",
            f"{r * 100:.2f}",
            f"{(r * 7919) % 180 - 90:.4f}",
            f"{(r * 104729) % 360 - 180:.4f}",
        )
    )


def generate(
    rows: int, seed: int = 0, newline_rate: float = 0.0005, line_ending: str = "\n"
) -> Iterator[str]:
    """Yield the CSV text in batches: the header first, then ``rows`` rows; same seed, same text."""
    rng = random.Random(seed)
    yield HEADER + line_ending
    for batch_start in range(0, rows, BATCH_ROWS):
        batch = [
            _row(rng, n, newline_rate)
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
    args = parser.parse_args(argv)
    ending = "\r\n" if args.crlf else "\n"
    with args.out.open("w", encoding="utf-8", newline="") as out:
        for text in generate(args.rows, args.seed, args.newline_rate, ending):
            out.write(text)


if __name__ == "__main__":
    main()
