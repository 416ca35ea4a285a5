"""The Flask application: webhooks, admin endpoints, health and metrics.

Importing this package loads nothing else: gunicorn reads ``webapp.gunicorn_conf`` in its
master before gevent patches the standard library, so the app's modules (Flask, redis,
threading users) must only load inside the workers, through ``create_app``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from ingest.config import Settings

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> Flask:
    """Build the web app (see :func:`webapp.factory.create_app`)."""
    from webapp.factory import create_app as build

    return build(settings)


def __getattr__(name: str) -> Any:
    # Keep ``from webapp import publisher`` and friends working without eager imports.
    import importlib

    if name in {"admin", "errors", "factory", "fastpath", "health", "webhooks", "context"}:
        return importlib.import_module(f"webapp.{name}")
    raise AttributeError(name)
