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
set +e
pytest -q -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" = 5 ]; then echo "pytest collected no tests"; exit 1; fi
exit "$status"
