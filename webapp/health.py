"""Liveness, readiness and metrics endpoints."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from webapp.context import runtime

__all__ = ["bp"]

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is alive and serving."""
    return jsonify({"status": "ok"})


def _check(name: str, probe: Any, checks: dict[str, str]) -> bool:
    try:
        probe()
    except Exception as exc:
        checks[name] = f"down: {type(exc).__name__}: {exc}"[:300]
        return False
    checks[name] = "ok"
    return True


@bp.get("/readyz")
def readyz() -> Response:
    """Every dependency answers: Redis (broker, keys, DLQ) and the sink."""
    rt = runtime()
    checks: dict[str, str] = {}
    ok = _check("redis", rt.redis.ping, checks)
    ok = _check("sink", rt.sink.check, checks) and ok
    response = jsonify({"status": "ready" if ok else "not ready", "checks": checks})
    response.status_code = 200 if ok else 503
    if not ok:
        response.headers["Retry-After"] = "5"
    return response
