"""S3 event notifications as SQS delivers them: test events, created objects, malformed bodies.

S3 URL-encodes object keys in notifications (``+`` for a space, ``%xx`` for the rest);
:func:`parse_notification` decodes them. A body wrapped in an SNS envelope (S3 -> SNS -> SQS)
is unwrapped first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote_plus

__all__ = ["CreatedObject", "Notification", "parse_notification"]

NotificationKind = Literal["test", "records", "malformed"]
MAX_BODY_CHARS = 256 * 1024  # the SQS message size limit


@dataclass(frozen=True)
class CreatedObject:
    """One ``ObjectCreated:*`` record: which object version appeared, and when."""

    bucket: str
    key: str
    size: int
    etag: str
    version_id: str | None = None
    sequencer: str | None = None
    event_time: str | None = None
    event_name: str = "ObjectCreated:Put"

    @property
    def version(self) -> str:
        """What tells two contents of the key apart: the ETag.

        Not the version id: in a versioned bucket the same bytes uploaded again are a new
        version with the same ETag, and must not be imported again.
        """
        return self.etag

    def describe(self, message_id: str) -> dict[str, Any]:
        """The object as an import's state shows it, with the message that announced it."""
        return {
            "bucket": self.bucket,
            "key": self.key,
            "size": self.size,
            "etag": self.etag,
            "versionId": self.version_id,
            "sequencer": self.sequencer,
            "eventTime": self.event_time,
            "eventName": self.event_name,
            "messageId": message_id,
        }


@dataclass
class Notification:
    """What one SQS message body says."""

    kind: NotificationKind
    created: list[CreatedObject] = field(default_factory=list)
    other_records: int = 0  # records of other events (ObjectRemoved, ...): nothing to import
    reason: str | None = None


def _malformed(reason: str) -> Notification:
    return Notification(kind="malformed", reason=reason)


def _unwrap(body: str) -> Any:
    data = json.loads(body)
    if isinstance(data, dict) and data.get("Type") == "Notification" and "Message" in data:
        message = data["Message"]
        data = json.loads(message) if isinstance(message, str) else message
    return data


def _created(record: Any, index: int) -> CreatedObject | str:
    """The record's object, or why it cannot be read."""
    if not isinstance(record, dict):
        return f"Records[{index}] is not an object"
    s3 = record.get("s3")
    bucket = s3.get("bucket") if isinstance(s3, dict) else None
    obj = s3.get("object") if isinstance(s3, dict) else None
    if not isinstance(bucket, dict) or not isinstance(obj, dict):
        return f"Records[{index}] has no s3.bucket and s3.object"
    name, raw_key = bucket.get("name"), obj.get("key")
    if not isinstance(name, str) or not name or not isinstance(raw_key, str) or not raw_key:
        return f"Records[{index}] has no bucket name or object key"
    try:
        key = unquote_plus(raw_key, errors="strict")
    except UnicodeDecodeError:
        return f"Records[{index}]: the key {raw_key!r} is not URL-encoded UTF-8"
    size, etag = obj.get("size"), obj.get("eTag")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return f"Records[{index}]: s3.object.size is missing or not a count of bytes"
    if not isinstance(etag, str) or not etag.strip('"'):
        return f"Records[{index}]: s3.object.eTag is missing"
    version = obj.get("versionId")
    return CreatedObject(
        bucket=name,
        key=key,
        size=size,
        etag=etag.strip('"'),
        version_id=version if isinstance(version, str) and version != "null" and version else None,
        sequencer=obj.get("sequencer") if isinstance(obj.get("sequencer"), str) else None,
        event_time=record.get("eventTime") if isinstance(record.get("eventTime"), str) else None,
        event_name=str(record.get("eventName")),
    )


def parse_notification(body: str) -> Notification:
    """Read an SQS message body sent by S3; anything else is ``malformed`` with a reason."""
    if len(body) > MAX_BODY_CHARS:
        return _malformed("the body is larger than an SQS message can be")
    try:
        data = _unwrap(body)
    except (json.JSONDecodeError, TypeError, ValueError):
        return _malformed("the body is not JSON")
    if not isinstance(data, dict):
        return _malformed("the body is not a JSON object")
    if data.get("Event") == "s3:TestEvent":
        return Notification(kind="test")
    records = data.get("Records")
    if not isinstance(records, list) or not records:
        return _malformed("the body has no Records: not an S3 event notification")
    notification = Notification(kind="records")
    for index, record in enumerate(records):
        event_name = record.get("eventName") if isinstance(record, dict) else None
        if not isinstance(event_name, str):
            return _malformed(f"Records[{index}] has no eventName")
        if not event_name.startswith("ObjectCreated:"):
            notification.other_records += 1
            continue
        found = _created(record, index)
        if isinstance(found, str):
            return _malformed(found)
        notification.created.append(found)
    return notification
