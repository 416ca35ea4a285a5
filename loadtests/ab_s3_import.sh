#!/bin/bash
# Alternate two checkouts of the project through the end-to-end S3/CSV benchmark, run after
# run, so that both sides meet the same machine (its speed moves by tens of percent within
# minutes). Prints one line per run; the JSON of each run is kept under OUT.
#
#   loadtests/ab_s3_import.sh OLD_CHECKOUT NEW_CHECKOUT CSV OUT [ROUNDS] [FIRST_ROUND]
#
# Each side runs its own code (PYTHONPATH points at its checkout) with this project's venv,
# and its own loadtests/bench_s3_import.py and devstack/: copy the newer ones into the older
# checkout first, so that both sides use the same S3 server and warm-up. Example (the ninth
# session's comparison):
#
#   git worktree add /tmp/old cdbe596
#   cp devstack/*.py /tmp/old/devstack/; cp loadtests/bench_s3_import.py /tmp/old/loadtests/
#   loadtests/ab_s3_import.sh /tmp/old . big.csv /tmp/ab 6
set -euo pipefail
old=$(cd "$1" && pwd); new=$(cd "$2" && pwd); csv=$(realpath "$3"); out=$4
rounds=${5:-3}; first=${6:-1}
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/.venv/bin/activate"
mkdir -p "$out"
for r in $(seq "$first" "$rounds"); do
  for side in old new; do
    root=$old; [ "$side" = new ] && root=$new
    (cd "$root" && PYTHONPATH=$root python loadtests/bench_s3_import.py --csv "$csv" \
      --workdir "$out/$side-$r" > "$out/$side-$r.json" 2> "$out/$side-$r.err") || true
    python - "$out/$side-$r.json" "$side" "$r" <<'PY'
import json, sys
path, side, r = sys.argv[1:]
try:
    d = json.load(open(path))
except (OSError, ValueError):
    print(side, r, "failed: see", path.replace(".json", ".err"))
    raise SystemExit(0)
c, s = d["cpuMsPerMB"], d.get("stages") or {}
print(side, r, d["MBps"], "MB/s; pyarrow", (d.get("pyarrow") or {}).get("MBps"),
      "; worker", c["worker (all processes)"], "redis", c["redis"], "s3", c["s3 server"],
      "total", c["total"], "; busy", d["machineBusy"], "; rss", d["peakRssMBPerWorkerProcess"],
      "; range body", s.get("rangeBody"))
PY
  done
done
