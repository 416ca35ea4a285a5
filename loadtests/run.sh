#!/usr/bin/env bash
# The load tests in one command, with the project's virtualenv: see loadtests/run.py --help.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../.venv/bin/python" "$here/run.py" "$@"
