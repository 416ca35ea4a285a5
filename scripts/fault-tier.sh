#!/usr/bin/env bash
# Runs the fault tier (tests/faults: killed workers, lost messages, Redis and S3 faults, a sink
# outage) N times and prints how many runs passed. Each run kills the worker
# FAULT_TIER_KILLS times during one import (20 here unless set; CI's default is 4).
#   scripts/fault-tier.sh 20                 # the whole tier, 20 times
#   scripts/fault-tier.sh 5 -k worker_kill   # extra arguments go to pytest
# Logs of failed runs stay in var/fault-tier/run-K.log, and the processes' own logs (web,
# worker, Redis) under var/fault-tier/run-K/ (pytest's --basetemp). Exit status 0 only if
# every run passed.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
runs="${1:-20}"
shift || true
case "$runs" in '' | *[!0-9]*) echo "usage: $0 N [pytest args...]" >&2; exit 2 ;; esac
# shellcheck source=scripts/bootstrap.sh
source scripts/bootstrap.sh
export FAULT_TIER_KILLS="${FAULT_TIER_KILLS:-20}"
logs="$ROOT/var/fault-tier"
mkdir -p "$logs"
passed=0
for ((k = 1; k <= runs; k++)); do
  log="$logs/run-$k.log"
  tmp="$logs/run-$k"
  rm -rf "$tmp"
  started=$SECONDS
  if pytest -q -p no:cacheprovider --basetemp "$tmp" tests/faults "$@" >"$log" 2>&1; then
    passed=$((passed + 1))
    result=passed
    rm -rf "$log" "$tmp"
  else
    result="FAILED (log: $log, process logs: $tmp)"
  fi
  echo "run $k/$runs: $result in $((SECONDS - started)) s"
done
echo "fault tier: $passed/$runs runs passed (FAULT_TIER_KILLS=$FAULT_TIER_KILLS)"
[ "$passed" = "$runs" ]
