"""Access to the app's settings and runtime from request handlers."""

from __future__ import annotations

from typing import cast

from flask import current_app

from ingest.config import Settings
from ingest.runtime import Runtime


def settings() -> Settings:
    return cast(Settings, current_app.extensions["ingest.settings"])


def runtime() -> Runtime:
    return cast(Runtime, current_app.extensions["ingest.runtime"])
