"""Liveness, readiness and metrics endpoints."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from ingest.observability.metrics import observe_dependency
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
        up = False
    else:
        checks[name] = "ok"
        up = True
    observe_dependency(name, up)
    return up


@bp.get("/readyz")
def readyz() -> Response:
    """Able to accept work: 200 while Redis (broker, keys, DLQ) answers, 503 when it does not.

    A sink outage shows as ``degraded`` (and in ``ingest_dependency_up``), still 200: the
    queue, the retries and the DLQ exist to absorb it, so the web keeps accepting events.
    """
    rt = runtime()
    checks: dict[str, str] = {}
    redis_ok = _check("redis", rt.redis.ping, checks)
    sink_ok = _check("sink", rt.sink.check, checks)
    status = "not ready" if not redis_ok else ("ready" if sink_ok else "degraded")
    response = jsonify({"status": status, "checks": checks})
    response.status_code = 200 if redis_ok else 503
    if not redis_ok:
        response.headers["Retry-After"] = "5"
    return response
