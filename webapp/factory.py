"""The application factory: ``create_app(settings)`` builds a fresh app with its blueprints."""

from __future__ import annotations

from flask import Flask

from ingest.config import Settings, load_settings
from ingest.runtime import Runtime
from webapp import admin, errors, fastpath, health, observability, webhooks

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> Flask:
    """Build the web app from ``settings`` (loaded from the environment when not given)."""
    settings = settings or load_settings()
    app = Flask("intelgraph_ingest")
    app.config["MAX_CONTENT_LENGTH"] = None  # bodies are bounded by our own streaming reader
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["ingest.settings"] = settings
    app.extensions["ingest.runtime"] = Runtime(settings)
    errors.register(app)
    observability.init_app(app)  # logs, request ids, metrics and /metrics, traces, Sentry
    app.register_blueprint(health.bp)
    admin.init_limits(app)
    app.register_blueprint(admin.bp)
    app.register_blueprint(webhooks.bp)
    fastpath.install(app)  # single webhook events skip Flask's request machinery
    return app
