"""The WSGI entry point gunicorn serves: ``webapp.wsgi:app``."""

from __future__ import annotations

import sys

from ingest.config import ConfigError
from webapp.factory import create_app

try:
    app = create_app()
except ConfigError as exc:
    print(f"ingest: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
