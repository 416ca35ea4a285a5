"""The Flask application: webhooks, admin endpoints, health and metrics."""

from webapp.factory import create_app

__all__ = ["create_app"]
