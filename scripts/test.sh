#!/usr/bin/env bash
# The whole suite: ruff, mypy, pytest (unit, integration, end to end). Starts what it needs:
# a Redis and a local S3 server of its own (pytest fixtures), unless INGEST_TEST_REDIS_URL is set.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/bootstrap.sh
source scripts/bootstrap.sh

echo "== ruff"; ruff check .
echo "== ruff format --check"; ruff format --check . || { echo "run: ruff format ."; exit 1; }
echo "== mypy"; mypy
echo "== pytest"
log="$(mktemp)"
set +e
pytest -q -p no:cacheprovider "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" = 5 ]; then echo "pytest collected no tests"; exit 1; fi
# Background threads of some tests may log after pytest's summary: repeat it last.
summary="$(grep -E '^=*\s*[0-9]+ (passed|failed)|^[0-9]+ (passed|failed)' "$log" | tail -n 1 || true)"
rm -f "$log"
[ -n "$summary" ] && echo "$summary"
exit "$status"
