"""Import requests and import state: what an operator asked for and how far it has come.

State lives in Redis so that every web process, worker and CLI sees the same progress.
Counters are credited once per range: a range task that runs twice (at-least-once delivery)
does not count its rows twice.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal
from urllib.parse import urlparse

import redis
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ingest.provenance import iso_now

__all__ = [
    "COUNTERS",
    "IMPORT_STATUSES",
    "ImportRequest",
    "ImportRequestError",
    "ImportStore",
    "RangeSummary",
    "parse_s3_uri",
]

IMPORT_STATUSES = ("queued", "running", "succeeded", "failed")
# The list of imports keeps at most this many (newest first), and none older than the states.
INDEX_MAX_ENTRIES = 100_000
# A filtered listing reads at most this many index entries looking for matches.
INDEX_SCAN_LIMIT = 20_000

ImportStatus = Literal["queued", "running", "succeeded", "failed"]
COUNTERS = (
    "bytesProcessed",
    "rowsStored",
    "rowsRejected",
    "duplicatesDropped",
    "rangesDone",
    "rangesFailed",
    "rangesResumed",
    "blankLines",
)


class ImportRequestError(ValueError):
    """The import request is not acceptable; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/prefix`` into bucket and prefix; anything else is refused."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3":
        raise ImportRequestError(f"only s3:// URIs can be imported, not {uri!r}")
    if not parsed.netloc or parsed.query or parsed.fragment or "@" in parsed.netloc:
        raise ImportRequestError(f"not a valid s3://bucket/prefix URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


class ImportRequest(BaseModel):
    """``POST /admin/imports`` and ``ingest import``: what to import and why."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(..., min_length=1, max_length=2048)
    schema_name: str = Field(..., alias="schema", min_length=1, max_length=128)
    purpose: str = Field(..., min_length=1, max_length=512)
    classification: str | None = Field(None, max_length=128)
    mapping: dict[str, str] = Field(default_factory=dict)

    @field_validator("uri")
    @classmethod
    def _s3_only(cls, value: str) -> str:
        parse_s3_uri(value)
        return value

    def check_bucket(self, allowed: list[str]) -> None:
        """Refuse (403) a bucket outside ``s3csv.allowedBuckets`` when that list is set."""
        bucket, _ = parse_s3_uri(self.uri)
        if allowed and bucket not in allowed:
            raise ImportRequestError(f"bucket {bucket!r} is not in s3csv.allowedBuckets", 403)


class RangeSummary(BaseModel):
    """What one range task did: counts only, never rows."""

    rangeId: str
    bytes: int = 0
    rowsStored: int = 0
    rowsRejected: int = 0
    duplicatesDropped: int = 0
    resumed: bool = False
    failed: bool = False
    error: str | None = None
    blankLines: int = 0  # empty lines skipped: they hold no record (not even an empty field)


_CREDIT = """
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
for i = 3, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""


_RECOVER = """
local old = redis.call('HGET', KEYS[2], ARGV[1])
if (not old) or (not string.find(old, '"failed":true', 1, true)) then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[1], 'rangesFailed', -1)
redis.call('HINCRBY', KEYS[1], 'rangesDone', 1)
for i = 3, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
if tonumber(redis.call('HGET', KEYS[1], 'rangesFailed')) == 0
   and redis.call('HGET', KEYS[1], 'status') == 'failed' then
  redis.call('HSET', KEYS[1], 'status', 'succeeded')
end
return 1
"""


class ImportStore:
    """Import state in Redis: a hash per import, its ranges' summaries and its errors."""

    def __init__(
        self, client: redis.Redis, namespace: str = "ingest:import", ttl: int = 30 * 86400
    ):
        self.client = client
        self.namespace = namespace
        self.ttl = ttl
        self._credit = client.register_script(_CREDIT)
        self._recover = client.register_script(_RECOVER)

    def _key(self, import_id: str, part: str = "") -> str:
        return f"{self.namespace}:{import_id}{':' + part if part else ''}"

    def create(self, request: ImportRequest, ingested_by: str) -> str:
        import_id = uuid.uuid4().hex
        state: dict[str, str | int] = {
            "importId": import_id,
            "status": "queued",
            "uri": request.uri,
            "schema": request.schema_name,
            "purpose": request.purpose,
            "classification": request.classification or "",
            "mapping": json.dumps(request.mapping),
            "ingestedBy": ingested_by,
            "objects": 0,
            "bytesTotal": 0,
            "rangesTotal": 0,
            "createdAt": iso_now(),
            **dict.fromkeys(COUNTERS, 0),
        }
        with self.client.pipeline() as pipe:
            pipe.hset(self._key(import_id), mapping=state)  # type: ignore[arg-type]
            pipe.expire(self._key(import_id), self.ttl)
            pipe.execute()
        return import_id

    def request_of(self, import_id: str) -> tuple[ImportRequest, str] | None:
        raw = self._raw(import_id)
        if raw is None:
            return None
        request = ImportRequest(
            uri=raw["uri"],
            schema=raw["schema"],
            purpose=raw["purpose"],
            classification=raw.get("classification") or None,
            mapping=json.loads(raw.get("mapping") or "{}"),
        )
        return request, raw.get("ingestedBy", "unknown")

    def _raw(self, import_id: str) -> dict[str, str] | None:
        raw = self.client.hgetall(self._key(import_id))
        if not raw:
            return None
        return {k.decode(): v.decode() for k, v in raw.items()}

    def mark_running(
        self, import_id: str, objects: int, bytes_total: int, ranges: int, plan_errors: int = 0
    ) -> None:
        self.client.hset(
            self._key(import_id),
            mapping={
                "status": "running",
                "objects": objects,
                "bytesTotal": bytes_total,
                "rangesTotal": ranges,
                "planErrors": plan_errors,
                "startedAt": iso_now(),
            },
        )

    def credit_range(self, import_id: str, summary: RangeSummary) -> bool:
        """Add a range's counts once; returns False when that range was already credited."""
        increments = {
            "bytesProcessed": summary.bytes,
            "rowsStored": summary.rowsStored,
            "rowsRejected": summary.rowsRejected,
            "duplicatesDropped": summary.duplicatesDropped,
            "rangesDone": 0 if summary.failed else 1,
            "rangesFailed": 1 if summary.failed else 0,
            "rangesResumed": 1 if summary.resumed else 0,
            "blankLines": summary.blankLines,
        }
        args: list[Any] = [summary.rangeId, summary.model_dump_json()]
        for name, value in increments.items():
            args += [name, value]
        credited = self._credit(
            keys=[self._key(import_id), self._key(import_id, "ranges")], args=args
        )
        self.client.expire(self._key(import_id, "ranges"), self.ttl)
        if summary.failed and summary.error and credited:
            self.add_error(import_id, summary.error)
        return bool(credited)

    def recover_range(self, import_id: str, summary: RangeSummary) -> bool:
        """A failed range succeeded on a DLQ retry: count it done; the import may now succeed."""
        args: list[Any] = [summary.rangeId, summary.model_dump_json()]
        for name in ("rowsStored", "rowsRejected", "duplicatesDropped", "blankLines"):
            args += [name, getattr(summary, name)]
        args += ["bytesProcessed", summary.bytes]
        return bool(
            self._recover(keys=[self._key(import_id), self._key(import_id, "ranges")], args=args)
        )

    def add_error(self, import_id: str, message: str, limit: int = 100) -> None:
        key = self._key(import_id, "errors")
        with self.client.pipeline() as pipe:
            pipe.rpush(key, message[:1000])
            pipe.ltrim(key, 0, limit - 1)
            pipe.expire(key, self.ttl)
            pipe.execute()

    def clear_errors(self, import_id: str) -> None:
        """Forget an import's errors before it is planned again (a DLQ replay)."""
        self.client.delete(self._key(import_id, "errors"))

    def finish(self, import_id: str, status: ImportStatus) -> None:
        self.client.hset(self._key(import_id), mapping={"status": status, "finishedAt": iso_now()})

    def get(self, import_id: str) -> dict[str, Any] | None:
        """The import's state as the contract shows it (plus a few extra counters)."""
        raw = self._raw(import_id)
        if raw is None:
            return None
        errors = [e.decode() for e in self.client.lrange(self._key(import_id, "errors"), 0, -1)]
        state: dict[str, Any] = {
            "importId": raw["importId"],
            "status": raw["status"],
            "uri": raw["uri"],
            "schema": raw["schema"],
            "objects": int(raw.get("objects", 0)),
            "bytesTotal": int(raw.get("bytesTotal", 0)),
        }
        for name in ("bytesProcessed", "rowsStored", "rowsRejected", "duplicatesDropped"):
            state[name] = int(raw.get(name, 0))
        state["blankLines"] = int(raw.get("blankLines", 0))
        state["startedAt"] = raw.get("startedAt")
        state["finishedAt"] = raw.get("finishedAt")
        state["errors"] = errors
        state["planErrors"] = int(raw.get("planErrors", 0))
        state["ranges"] = {
            "total": int(raw.get("rangesTotal", 0)),
            "done": int(raw.get("rangesDone", 0)),
            "failed": int(raw.get("rangesFailed", 0)),
            "resumed": int(raw.get("rangesResumed", 0)),
        }
        if raw.get("watch"):
            state["watch"] = raw["watch"]
            state["notification"] = self._notification(import_id, raw)
        return state

    # -- the list of imports, and imports started by watches (continuous ingestion) --------
    def key(self, import_id: str, part: str = "") -> str:
        """The Redis key of an import's state hash, or of one of its parts (``objects``)."""
        return self._key(import_id, part)

    def _index_key(self, watch: str | None = None) -> str:
        return f"{self.namespace}-index" + (f":watch:{watch}" if watch else "")

    def index(self, import_id: str, watch: str | None = None, at: float | None = None) -> None:
        """List the import (newest first); entries past the states' lifetime are dropped."""
        now = time.time() if at is None else at
        with self.client.pipeline() as pipe:
            for key in [self._index_key()] + ([self._index_key(watch)] if watch else []):
                pipe.zadd(key, {import_id: now})
                pipe.zremrangebyscore(key, "-inf", now - self.ttl)
                pipe.zremrangebyrank(key, 0, -INDEX_MAX_ENTRIES - 1)
                pipe.expire(key, self.ttl)
            pipe.execute()

    def list_recent(
        self, status: str | None = None, watch: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Listed imports, newest first, optionally only one status or one watch's."""
        key = self._index_key(watch)
        found: list[dict[str, Any]] = []
        page = 200
        for start in range(0, INDEX_SCAN_LIMIT, page):
            ids = [i.decode() for i in self.client.zrevrange(key, start, start + page - 1)]
            if not ids:
                break
            with self.client.pipeline(transaction=False) as pipe:
                for import_id in ids:
                    pipe.hget(self._key(import_id), "status")
                statuses = pipe.execute()
            for import_id, current in zip(ids, statuses, strict=True):
                if current is None or (status and current.decode() != status):
                    continue  # expired states leave the index when it is trimmed
                state = self.get(import_id)
                if state is not None:
                    found.append(state)
                if len(found) >= limit:
                    return found
        return found

    def watched_objects(self, import_id: str) -> list[dict[str, Any]] | None:
        """The object versions a watch gave this import, or None for an import of a prefix."""
        raw = self.client.lrange(self._key(import_id, "objects"), 0, -1)
        if not raw and not self.client.hget(self._key(import_id), "watch"):
            return None
        return [json.loads(item) for item in raw]

    def _notification(self, import_id: str, raw: dict[str, str]) -> dict[str, Any]:
        origin = json.loads(raw.get("notification") or "{}")
        origin["objects"] = self.watched_objects(import_id) or []
        return dict(origin)

    def finish_if_running(self, import_id: str, status: ImportStatus) -> bool:
        """Close an import that is still queued or running; False when it already ended.

        The chord callback and the ledger sweepers may both try to close an import: only the
        first one sets its final status and ``finishedAt``.
        """
        script = (
            "local s = redis.call('HGET', KEYS[1], 'status') "
            "if s ~= 'queued' and s ~= 'running' then return 0 end "
            "redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finishedAt', ARGV[2]) return 1"
        )
        return bool(self.client.eval(script, 1, self._key(import_id), status, iso_now()))
