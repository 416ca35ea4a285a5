"""WSGI apps that read the body and answer 202 ``{}``: the floor of loadtests/ceiling.py.

``app`` is bare WSGI; ``flask_app`` answers from a Flask route (``ceiling.py --app flask``).

Nothing of IntelGraph runs here, so what gunicorn and k6 cost around it is the least any
webhook request can cost on this machine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["app", "flask_app"]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    environ["wsgi.input"].read()
    start_response("202 Accepted", [("Content-Type", "application/json"), ("Content-Length", "2")])
    return [b"{}"]


def _flask_app() -> Any:
    """The same answer from a Flask route shaped as the webhook's: the framework's own cost."""
    from flask import Flask, request

    flask = Flask("noop")

    @flask.post("/v1/webhooks/<source>")
    def receive(source: str) -> tuple[bytes, int, dict[str, str]]:
        request.get_data()
        return b"{}", 202, {"Content-Type": "application/json"}

    return flask


flask_app = _flask_app()
