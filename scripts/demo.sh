#!/usr/bin/env bash
# The main job on embedded defaults: installs what it needs, starts a local Redis and a local
# S3 server when none is configured, runs web, worker and Flower from the Procfile, ingests
# the golden fixtures and signed webhook events, and prints what was stored.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/bootstrap.sh
source scripts/bootstrap.sh
exec python scripts/demo.py "$@"
