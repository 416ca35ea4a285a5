"""A dead-letter entry: what failed, why, and everything needed to process it again."""

from __future__ import annotations

import base64
import builtins
import json
import secrets
import time
import traceback
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from ingest.hashing import sha256_hex
from ingest.isotime import iso_utc, utc_now_iso

__all__ = [
    "RETRY_HISTORY_LIMIT",
    "RETRY_TRANSFORMATION",
    "DeadLetterEntry",
    "EntryKind",
    "FailureDetail",
    "RetryRecord",
    "entry_id_for",
    "utc_now_iso",
    "webhook_source",
]

EntryKind = Literal["task", "row", "event"]
RETRY_HISTORY_LIMIT = 10
RETRY_TRANSFORMATION = "dlq-retry"
_REASON_MAX = 500


def _new_id() -> str:
    # time first so ids sort by creation; random suffix keeps hosts from colliding
    return f"{time.time_ns():016x}-{secrets.token_hex(6)}"


def entry_id_for(kind: EntryKind, *parts: object) -> str:
    """A deterministic entry id, so a re-executed task re-adds the same entry instead of a twin."""
    return f"{kind}:{sha256_hex(chr(31).join(str(p) for p in parts).encode())}"


def webhook_source(name: str) -> str:
    """The DLQ ``source`` of a webhook source, as S3 objects use their ``s3://`` URI."""
    return f"webhook:{name}"


def _jsonable(value: Any) -> Any:
    # numpy scalars and timestamps from pandera failure cases are not JSON; NaN becomes null
    text = json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    return json.loads(text, parse_constant=lambda _: None)


class _Model(BaseModel):
    # camelCase on the wire (CLI --json, /admin/dlq, export); unknown keys ignored so that
    # an older release can still read entries written by a newer one
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class FailureDetail(_Model):
    """What went wrong: exception type, message and (optionally) traceback."""

    type: str
    message: str
    traceback: str | None = None

    @classmethod
    def from_exception(cls, exc: BaseException) -> FailureDetail:
        """Describe ``exc``, traceback included."""
        return cls(
            type=f"{type(exc).__module__}.{type(exc).__qualname__}",
            message=str(exc),
            traceback="".join(traceback.format_exception(exc)),
        )


class RetryRecord(_Model):
    """One failed retry of a dead-lettered entry."""

    attempt: int
    failed_at: str
    error: FailureDetail | None = None


class DeadLetterEntry(_Model):
    """One item that could not be processed, with everything needed to process it again."""

    id: str = Field(default_factory=_new_id, pattern=r"^\S{1,256}$")
    kind: EntryKind
    source: str = Field(min_length=1)
    reason: str
    attempts: int = Field(default=1, ge=1)
    first_failed_at: str = Field(default_factory=utc_now_iso)
    last_failed_at: str = Field(default_factory=lambda data: data["first_failed_at"])
    payload: dict[str, Any] = Field(default_factory=dict)
    error: FailureDetail | None = None
    import_id: str | None = None
    retry_history: builtins.list[RetryRecord] = Field(default_factory=builtins.list)

    @field_validator("reason")
    @classmethod
    def _one_line(cls, value: str) -> str:
        line = " ".join(value.split())[:_REASON_MAX]
        if not line:
            raise ValueError("reason must not be empty")
        return line

    @field_validator("first_failed_at", "last_failed_at", mode="before")
    @classmethod
    def _utc(cls, value: object) -> object:
        if isinstance(value, datetime):
            return iso_utc(value)
        if isinstance(value, str):
            return iso_utc(datetime.fromisoformat(value))
        return value

    def to_json(self) -> str:
        """The entry as one line of camelCase JSON."""
        return self.model_dump_json(by_alias=True)

    def raw_row(self) -> bytes | None:
        """The rejected CSV row's exact bytes (``row`` entries), decoded from base64."""
        encoded = self.payload.get("rawBase64")
        return base64.b64decode(encoded) if isinstance(encoded, str) else None

    def summary(self) -> dict[str, Any]:
        """The columns of a listing: id, kind, source, reason, attempts, failure times, import."""
        return {
            "id": self.id,
            "kind": self.kind,
            "source": self.source,
            "reason": self.reason,
            "attempts": self.attempts,
            "firstFailedAt": self.first_failed_at,
            "lastFailedAt": self.last_failed_at,
            "importId": self.import_id,
        }
