"""Continuous ingestion: one receive of a watch's SQS queue becomes at most one import.

Each object version (bucket, key, ETag) is claimed once per watch with a Redis
``SET NX`` that names the import it belongs to; the claim, the import's list of objects and
its origin are written in one Lua script, so a claimed object always has an import that knows
it. An import is *dispatched* when its scan task is in the broker; only then are its messages
deleted from SQS. A message redelivered (twice-delivered, or its worker died) finds its
objects claimed: by a dispatched import, it is a duplicate and is deleted; by an import that
never got dispatched (its worker died in between), that same import is dispatched now. A
second dispatch of an import is harmless: ranges are credited and stored once per range.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from ingest.config import WatchConfig
from ingest.dlq import DeadLetterQueue, task_entry
from ingest.provenance import iso_now
from ingest.s3csv.imports import ImportRequest, ImportStore
from ingest.s3csv.notifications import CreatedObject, Notification, parse_notification

if TYPE_CHECKING:  # the reader loads numpy: the web reads watch counters without it
    from ingest.s3csv.reader import ObjectInfo

__all__ = [
    "NOTIFICATION_TASK",
    "MalformedNotification",
    "QueueMessage",
    "ReceiveOutcome",
    "WatchIntake",
    "WatchStats",
    "refusal",
    "watched_objects",
]

log = logging.getLogger(__name__)
# The DLQ names malformed notifications after this task (retrying one re-reads its body).
NOTIFICATION_TASK = "ingest.watch.notification"
CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".gz", ".zst", ".zstd")
COUNTERS = (
    "messagesReceived",
    "testEvents",
    "malformed",
    "messagesRefused",
    "objectsRefused",
    "objectsIgnored",
    "objectsClaimed",
    "duplicates",
    "importsStarted",
    "redispatched",
)


class MalformedNotification(ValueError):
    """An SQS message that is not a readable S3 event notification."""


@dataclass(frozen=True)
class QueueMessage:
    """One received SQS message."""

    message_id: str
    receipt_handle: str
    body: str
    sent_at: float | None = None  # epoch seconds


@dataclass
class ReceiveOutcome:
    """What became of one receive: which messages may be deleted, which must come back."""

    delete: list[QueueMessage] = field(default_factory=list)
    retry_later: list[QueueMessage] = field(default_factory=list)
    import_id: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n


def refusal(watch: WatchConfig, obj: CreatedObject, allowed_buckets: Iterable[str]) -> str | None:
    """Why the watch must not import ``obj``, or None when it may."""
    allowed = list(allowed_buckets)
    if obj.bucket != watch.bucket:
        return f"bucket {obj.bucket!r} is not the watch's bucket {watch.bucket!r}"
    if not obj.key.startswith(watch.prefix):
        return f"key {obj.key!r} is outside the watch's prefix {watch.prefix!r}"
    if allowed and obj.bucket not in allowed:
        return f"bucket {obj.bucket!r} is not in s3csv.allowedBuckets"
    return None


def _is_csv(key: str) -> bool:
    return key.lower().endswith(CSV_SUFFIXES)


def watched_objects(store: ImportStore, import_id: str, s3: Any = None) -> list[ObjectInfo] | None:
    """The object versions to plan for an import a watch started; None for other imports.

    With ``s3``, each object's size is read from S3 (pinned to the notified ETag) rather than
    taken from the message, which anyone allowed to send to the queue could have written.
    """
    objects = store.watched_objects(import_id)
    if objects is None:
        return None
    from ingest.s3csv.reader import ObjectInfo

    found = [ObjectInfo(key=o["key"], size=int(o["size"]), etag=o["etag"]) for o in objects]
    if s3 is None:
        return found
    bucket = objects[0]["bucket"] if objects else ""
    return [_checked_size(s3, bucket, obj) for obj in found]


def _checked_size(s3: Any, bucket: str, obj: ObjectInfo) -> ObjectInfo:
    from botocore.exceptions import ClientError

    from ingest.s3csv.reader import ObjectInfo

    try:
        head = s3.head_object(Bucket=bucket, Key=obj.key, IfMatch=f'"{obj.etag}"')
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status in (404, 412):
            # Replaced or deleted since the notification: its ranges fail loudly (ETag pinned).
            return obj
        raise
    return ObjectInfo(key=obj.key, size=int(head["ContentLength"]), etag=obj.etag)


class WatchStats:
    """A watch's counters and last readings, in Redis, shared by every poller of the watch."""

    def __init__(self, client: redis.Redis, watch: str) -> None:
        self.client = client
        self.key = f"ingest:watch:{watch}:stats"

    def add(self, counts: dict[str, int], **fields: str | float | int) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            for name, value in counts.items():
                if value:
                    pipe.hincrby(self.key, name, value)
            if fields:
                pipe.hset(self.key, mapping=fields)  # type: ignore[arg-type]
            pipe.execute()

    def read(self) -> dict[str, Any]:
        raw = {k.decode(): v.decode() for k, v in self.client.hgetall(self.key).items()}
        stats: dict[str, Any] = {name: int(raw.get(name, 0)) for name in COUNTERS}
        for name in ("lastMessageAt", "lastPollAt", "lastError", "lastErrorAt", "backlogAt"):
            stats[name] = raw.get(name)
        for name in ("lagSeconds", "backlog", "backlogInFlight"):
            stats[name] = float(raw[name]) if name in raw else None
        return stats


# KEYS: import hash, import objects list, claim keys...; ARGV: import id, ttl, watch,
# notification JSON, now, then one object JSON per claim key.
_CLAIM = """
local fresh = 0
local owners = {}
for i = 3, #KEYS do
  if redis.call('SET', KEYS[i], ARGV[1], 'NX', 'EX', ARGV[2]) then
    fresh = fresh + 1
    redis.call('RPUSH', KEYS[2], ARGV[i + 3])
    owners[#owners + 1] = ''
  else
    owners[#owners + 1] = redis.call('GET', KEYS[i])
  end
end
if fresh > 0 then
  redis.call('HSET', KEYS[1], 'watch', ARGV[3], 'notification', ARGV[4],
             'dispatched', '0', 'claimedAt', ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return owners
"""


@dataclass
class _Candidate:
    obj: CreatedObject
    messages: list[QueueMessage]


class WatchIntake:
    """Decides what a receive of one watch's queue starts; ``dispatch`` queues an import's scan."""

    def __init__(
        self,
        watch: WatchConfig,
        store: ImportStore,
        dlq: DeadLetterQueue,
        dispatch: Callable[[str], None],
        allowed_buckets: Iterable[str] = (),
        redispatch_after: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.watch = watch
        self.store = store
        self.dlq = dlq
        self.dispatch = dispatch
        self.allowed = list(allowed_buckets)
        self.redispatch_after = redispatch_after
        self.clock = clock
        self.stats = WatchStats(store.client, watch.name)
        self._claim = store.client.register_script(_CLAIM)

    def claim_key(self, obj: CreatedObject) -> str:
        identity = "\x1f".join((self.watch.name, obj.bucket, obj.key, obj.version))
        return f"ingest:watch:claim:{hashlib.sha256(identity.encode()).hexdigest()}"

    def handle(self, messages: list[QueueMessage]) -> ReceiveOutcome:
        """Settle every message of a receive; start one import for the new object versions."""
        outcome = ReceiveOutcome()
        outcome.count("messagesReceived", len(messages))
        candidates: dict[str, _Candidate] = {}
        for message in messages:
            if self._read(message, outcome, candidates):
                outcome.delete.append(message)
        pending = self._claim_and_dispatch(candidates, outcome)
        for message in outcome.delete[:]:
            if message.message_id in pending:
                outcome.delete.remove(message)
                outcome.retry_later.append(message)
        self._record(messages, outcome)
        return outcome

    def _read(
        self, message: QueueMessage, outcome: ReceiveOutcome, candidates: dict[str, _Candidate]
    ) -> bool:
        """Read one message into ``candidates``; False when it must stay in the queue."""
        notification = parse_notification(message.body)
        if notification.kind == "test":
            outcome.count("testEvents")
            return True
        if notification.kind == "malformed":
            return self._dead_letter(message, notification, outcome)
        outcome.count("objectsIgnored", notification.other_records)
        refused = 0
        for obj in notification.created:
            reason = refusal(self.watch, obj, self.allowed)
            if reason is not None:
                refused += 1
                log.warning(
                    "watch %s refused s3://%s/%s: %s", self.watch.name, obj.bucket, obj.key, reason
                )
                continue
            if not _is_csv(obj.key) or obj.key.endswith("/"):
                outcome.count("objectsIgnored")
                continue
            found = candidates.setdefault(self.claim_key(obj), _Candidate(obj, []))
            found.messages.append(message)
        if refused:
            outcome.count("objectsRefused", refused)
            outcome.count("messagesRefused")
        return True

    def _dead_letter(
        self, message: QueueMessage, notification: Notification, outcome: ReceiveOutcome
    ) -> bool:
        reason = notification.reason or "malformed"
        entry = task_entry(
            task_name=NOTIFICATION_TASK,
            task_id=f"sqs:{self.watch.name}:{message.message_id}",
            args=[self.watch.name, message.body],
            kwargs={},
            exc=MalformedNotification(reason),
            source=f"watch:{self.watch.name}",
            extra={"queueUrl": self.watch.queue_url, "messageId": message.message_id},
        )
        try:
            self.dlq.add(entry)
        except Exception:  # DLQ full or Redis down: the message stays in SQS, nothing is lost
            log.exception("watch %s: cannot dead-letter message %s", self.watch.name, message)
            return False
        log.warning("watch %s: malformed message %s: %s", self.watch.name, message, reason)
        outcome.count("malformed")
        return True

    def _claim_and_dispatch(
        self, candidates: dict[str, _Candidate], outcome: ReceiveOutcome
    ) -> set[str]:
        """Claim the new versions for one new import; returns ids of messages to keep."""
        if not candidates:
            return set()
        keys = list(candidates)
        request = ImportRequest(
            uri=f"s3://{self.watch.bucket}/{self.watch.prefix}",
            schema=self.watch.schema_name,
            purpose=self.watch.purpose,
            classification=self.watch.classification,
            mapping=self.watch.mapping,
        )
        import_id = self.store.create(request, self.watch.actor)
        message_ids = sorted({m.message_id for c in candidates.values() for m in c.messages})
        origin = {"queueUrl": self.watch.queue_url, "messageIds": message_ids, "at": iso_now()}
        objects = [
            json.dumps(candidates[k].obj.describe(candidates[k].messages[0].message_id))
            for k in keys
        ]
        owners = self._claim(
            keys=[self.store.key(import_id), self.store.key(import_id, "objects"), *keys],
            args=[
                import_id,
                self.store.ttl,
                self.watch.name,
                json.dumps(origin),
                self.clock(),
                *objects,
            ],
        )
        fresh = [k for k, owner in zip(keys, owners, strict=True) if not owner]
        outcome.count("objectsClaimed", len(fresh))
        if fresh:
            self.store.index(import_id, watch=self.watch.name)
            self.dispatch(import_id)
            self.store.client.hset(self.store.key(import_id), "dispatched", "1")
            outcome.import_id = import_id
            outcome.count("importsStarted")
            log.info(
                "watch %s started import %s of %d objects", self.watch.name, import_id, len(fresh)
            )
        pending: set[str] = set()
        for key, owner in zip(keys, owners, strict=True):
            if owner and not self._settle_claimed(owner.decode(), outcome):
                pending.update(m.message_id for m in candidates[key].messages)
        return pending

    def _settle_claimed(self, owner: str, outcome: ReceiveOutcome) -> bool:
        """An object another import claimed: True once that import is surely dispatched."""
        client = self.store.client
        dispatched, claimed_at = client.hmget(self.store.key(owner), ["dispatched", "claimedAt"])
        if dispatched is None or dispatched == b"1":
            outcome.count("duplicates")  # dispatched, or so old that its state expired
            return True
        if self.clock() - float(claimed_at or 0) < self.redispatch_after:
            return False  # another poller is dispatching it right now
        if not client.set(f"ingest:watch:redispatch:{owner}", 1, nx=True, ex=300):
            return False
        # Its poller died between the claim and the dispatch: dispatch that same import.
        self.store.index(owner, watch=self.watch.name)
        self.dispatch(owner)
        client.hset(self.store.key(owner), "dispatched", "1")
        outcome.count("redispatched")
        outcome.count("duplicates")
        log.warning("watch %s dispatched import %s its poller left behind", self.watch.name, owner)
        return True

    def _record(self, messages: list[QueueMessage], outcome: ReceiveOutcome) -> None:
        now = self.clock()
        fields: dict[str, str | float | int] = {"lastPollAt": iso_now()}
        if messages:
            fields["lastMessageAt"] = iso_now()
            sent = [m.sent_at for m in messages if m.sent_at is not None]
            fields["lagSeconds"] = round(max(0.0, now - min(sent)), 3) if sent else 0.0
        else:
            fields["lagSeconds"] = 0.0
        self.stats.add(outcome.counts, **fields)
