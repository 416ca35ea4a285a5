"""A WSGI app that reads the body and answers 202 ``{}``: the floor of loadtests/ceiling.py.

Nothing of IntelGraph runs here, so what gunicorn and k6 cost around it is the least any
webhook request can cost on this machine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["app"]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    environ["wsgi.input"].read()
    start_response("202 Accepted", [("Content-Type", "application/json"), ("Content-Length", "2")])
    return [b"{}"]
