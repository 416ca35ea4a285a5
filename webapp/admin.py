"""Admin endpoints: imports and the DLQ, behind the bearer token ``INGEST_ADMIN_TOKEN``."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Blueprint, Flask, Response, jsonify, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from ingest.dlq import EntryKind
from ingest.s3csv.imports import ImportRequestError, ImportStore
from tasks.imports import submit_import
from webapp.context import runtime, settings
from webapp.errors import ApiError

__all__ = ["bp"]

bp = Blueprint("admin", __name__, url_prefix="/admin")
_REQUEST_HOOKS = ("before_request_funcs", "after_request_funcs", "teardown_request_funcs")
T = TypeVar("T")


def init_limits(app: Flask) -> Limiter:
    """Per-client-IP limits on every admin endpoint (``http.adminRateLimit``), kept in Redis.

    A Redis outage must not lock operators out, so limiter errors are swallowed and an
    in-memory fallback applies meanwhile. flask-limiter hooks into every request of the app;
    its hooks are moved to the admin blueprint, so that webhook requests (thousands a second,
    never limited per IP) do not pay for a limiter that has nothing to check for them.
    Call this before the admin blueprint is registered: the limit then runs before the token
    check, as an app-wide hook would.
    """
    config = app.extensions["ingest.settings"]

    def install() -> Limiter:
        return Limiter(
            get_remote_address,
            app=app,
            storage_uri=config.redis_url,
            strategy="fixed-window",
            headers_enabled=True,
            swallow_errors=True,
            in_memory_fallback_enabled=True,
            key_prefix="ingest:admin-limit",
        )

    limiter = _confined_to_blueprint(app, bp.name, install)
    limiter.limit(lambda: config.http.admin_rate_limit)(bp)
    return limiter


def _confined_to_blueprint(app: Flask, blueprint: str, install: Callable[[], T]) -> T:
    """Run ``install`` and move the app-wide request hooks it added to ``blueprint`` alone."""
    before = {name: list(getattr(app, name).get(None, ())) for name in _REQUEST_HOOKS}
    installed = install()
    for name in _REQUEST_HOOKS:
        registry = getattr(app, name)
        current = registry.get(None, [])
        added = [hook for hook in current if hook not in before[name]]
        registry[None] = [hook for hook in current if hook not in added]
        registry.setdefault(blueprint, []).extend(added)
    return installed


@bp.before_request
def _require_token() -> None:
    token = settings().admin_token
    if not token:
        raise ApiError(503, "admin endpoints are disabled: set INGEST_ADMIN_TOKEN")
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        value.strip().encode(), token.encode()
    ):
        raise ApiError(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})


def _json_body() -> dict[str, Any]:
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nested deeper than the JSON parser goes
        raise ApiError(400, "the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


@bp.post("/imports")
def create_import() -> tuple[Response, int]:
    """Start an import of ``s3://bucket/prefix``; answers 202 with its id."""
    actor = request.headers.get("X-Ingest-Actor", "admin-api")[:128]
    rt = runtime()
    try:
        import_id = submit_import(rt.settings, rt.redis, rt.schema_names, _json_body(), actor)
    except ImportRequestError as exc:
        raise ApiError(exc.status, str(exc)) from exc
    return jsonify({"importId": import_id, "status": "queued"}), 202


@bp.get("/imports")
def list_imports() -> Response:
    """Recent imports, newest first: ``?status=``, ``?watch=``, ``?limit=`` (1 to 1000)."""
    from ingest.s3csv.watch_status import listing_query

    args = request.args
    try:
        status, watch, limit = listing_query(
            args.get("status"), args.get("watch"), args.get("limit")
        )
    except ImportRequestError as exc:
        raise ApiError(exc.status, str(exc)) from exc
    return jsonify(ImportStore(runtime().redis).list_recent(status, watch, limit))


@bp.get("/watches")
def list_watches() -> Response:
    """Each watch: its queue, last message time, imports started, refusals and lag."""
    from ingest.s3csv.watch_status import watch_overview

    rt = runtime()
    return jsonify(watch_overview(rt.settings, rt.redis))


@bp.get("/imports/<import_id>")
def show_import(import_id: str) -> Response:
    """The import's state and counters."""
    state = ImportStore(runtime().redis).get(import_id[:64])
    if state is None:
        raise ApiError(404, f"no import {import_id!r}")
    return jsonify(state)


@bp.get("/dlq")
def list_dlq() -> Response:
    """DLQ entries as ``ingest dlq list --json`` shows them; ``?id=`` shows one in full."""
    dlq = runtime().dlq
    entry_id = request.args.get("id")
    if entry_id:
        entry = dlq.get(entry_id)
        if entry is None:
            raise ApiError(404, f"no DLQ entry {entry_id!r}")
        return jsonify(entry.model_dump(mode="json", by_alias=True))
    try:
        limit = min(max(int(request.args.get("limit", 50)), 1), 10_000)
    except ValueError as exc:
        raise ApiError(400, "limit must be a whole number") from exc
    kind = request.args.get("kind")
    if kind not in (None, "task", "row", "event"):
        raise ApiError(400, "kind must be task, row or event")
    entries = dlq.list(
        limit=limit,
        kind=cast(EntryKind | None, kind),
        source=request.args.get("source"),
        import_id=request.args.get("importId"),
    )
    return jsonify({"depth": dlq.depth(), "entries": [e.summary() for e in entries]})


@bp.post("/dlq/retry")
def retry_dlq() -> tuple[Response, int]:
    """Replay entries: ``{"ids": [...]}`` or ``{"all": true, "kind"?, "source"?, "importId"?}``."""
    from tasks.dlq_replay import retry_entries

    body = _json_body()
    ids = body.get("ids")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
        raise ApiError(400, "ids must be a list of entry ids")
    if bool(ids) == bool(body.get("all")):
        raise ApiError(400, 'give "ids" or "all": true (not both)')
    wait = bool(body.get("wait", False))
    for name in ("kind", "source", "importId"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise ApiError(400, f"{name} must be a string")
    timeout = body.get("timeout", 30)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ApiError(400, "timeout must be a positive number of seconds")
    try:
        report = retry_entries(
            runtime(),
            ids=ids or None,
            kind=body.get("kind"),
            source=body.get("source"),
            import_id=body.get("importId"),
            wait=wait,
            timeout=min(float(timeout), 60),
        )
    except LookupError as exc:
        raise ApiError(404, str(exc)) from exc
    return jsonify(report), 200 if wait else 202
