"""Pre-storage latency of stored webhook events: from receipt (``receivedAt``) to the sink file.

A load check, not a test: run it on a file sink after a k6 run, e.g.

    .venv/bin/python loadtests/webhooks_storage_latency.py var/sink --source load

It reports how many events were stored and the p50/p95/p99/max of the time from when the web
process received each event to when its batch file appeared (the file's modification time).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

__all__ = ["main", "storage_delays"]


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def storage_delays(root: Path, source: str | None = None) -> list[float]:
    """Seconds from receipt to storage of every stored webhook event below ``root``."""
    pattern = f"webhooks/{source}/*.jsonl" if source else "webhooks/*/*.jsonl"
    delays = []
    for path in root.glob(pattern):
        stored_at = path.stat().st_mtime
        with open(path, "rb") as fh:
            for line in fh:
                received = json.loads(line)["provenance"].get("receivedAt")
                if received:
                    delays.append(stored_at - _epoch(received))
    return sorted(delays)


def _quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def main(argv: list[str] | None = None) -> int:
    """Print the delay distribution; exit 1 when nothing was found."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sink_dir", type=Path)
    parser.add_argument("--source")
    args = parser.parse_args(argv)
    delays = storage_delays(args.sink_dir, args.source)
    if not delays:
        print("no stored webhook events found", file=sys.stderr)
        return 1
    ms = [d * 1000 for d in delays]
    print(
        f"events={len(ms)} p50={_quantile(ms, 0.5):.1f}ms p95={_quantile(ms, 0.95):.1f}ms "
        f"p99={_quantile(ms, 0.99):.1f}ms max={ms[-1]:.1f}ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
