#!/usr/bin/env bash
# Installs what the project needs, once: a virtualenv with the pinned packages, and Debian's
# redis-server when it is missing. Sourced by scripts/demo.sh and scripts/test.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${INGEST_VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON:-python3.11}"
command -v "$PYTHON_BIN" >/dev/null 2>&1 || PYTHON_BIN=python3

log() { printf '[bootstrap] %s\n' "$*" >&2; }

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtualenv $VENV"
    "$PYTHON_BIN" -m venv "$VENV"
  fi
  local stamp="$VENV/.ingest-installed" want
  # The compiled hash (setup.py, ingest/_speedups.c) is rebuilt when its source changes.
  want="$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" "$ROOT/setup.py" "$ROOT/ingest/_speedups.c" | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing the project and its pinned dependencies"
    local pip_log="$VENV/pip-install.log"
    if ! { "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel \
           && "$VENV/bin/python" -m pip install -q -e "$ROOT[dev]"; } >"$pip_log" 2>&1; then
      tail -n 30 "$pip_log" >&2; log "pip install failed (full log: $pip_log)"; return 1
    fi
    echo "$want" > "$stamp"
  fi
}

apt_install() {
  if [ "$(id -u)" != "0" ]; then
    log "$1 is missing; install it (apt-get install $1) or configure one"; return 1
  fi
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -print -quit 2>/dev/null)" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
    || { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
}

ensure_redis_binary() {
  if ! command -v redis-server >/dev/null 2>&1; then
    log "installing Debian's redis-server"
    apt_install redis-server
    # The package starts a system Redis on 6379; we run our own on ports of our own.
    (service redis-server stop || true) >/dev/null 2>&1
  fi
}

ensure_postgres_binaries() {
  # The PostgreSQL sink's tests run a throw-away cluster from Debian's binaries.
  if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    log "installing Debian's postgresql"
    apt_install postgresql || return 1
    # The package starts a system cluster on 5432; tests run their own on ports of their own.
    (service postgresql stop || true) >/dev/null 2>&1
  fi
}

ensure_venv
ensure_redis_binary
ensure_postgres_binaries || log "no PostgreSQL: the PostgreSQL sink's tests will fail"
export PATH="$VENV/bin:$PATH"
