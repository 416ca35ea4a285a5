"""Draining the webhook streams: read accepted events through a consumer group, store, acknowledge.

Delivery is at least once and does not depend on any broker's own bookkeeping:

- a drain reads new entries with ``XREADGROUP`` (they become *pending* for its consumer), stores
  them as one sink file per batch, then acknowledges and deletes them (``XACK`` + ``XDEL``);
- a drain killed in between leaves its entries pending: any later drain claims entries idle
  for ``http.redeliverAfter`` seconds (``XPENDING`` + ``XCLAIM``) and stores them again;
- storing is idempotent: a batch's sink name comes from its entry ids, and the content dedup
  claims drop an event a differently grouped re-read would store twice;
- each batch's entry ids are recorded before it is stored (``batchof`` and ``batches``
  hashes, cleared by the acknowledgement), and a re-read regroups recorded entries exactly as
  they were: a drain killed between a batch's dedup claims and its write leaves claims that
  only that same batch can hold, so its events are stored, not dropped as duplicates of it;
- an entry delivered more than ``celery.maxRetries + 1`` times goes to the DLQ, as a
  ``ingest.webhooks.store_batch`` task that ``ingest dlq retry`` replays.

At most :data:`SLOTS` drains run per source at once, each holding a lease (a Redis key with a
short expiry that it renews while it works); a dispatcher starts slot 0, and a drain that reads
full batches starts the next slot. A drain message lost on the way lets its lease expire, and
the next poll starts another.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from ingest.webhooks.entries import StreamEntry, entry_of, events_in, payloads_of, text_of
from ingest.webhooks.stream import GROUP, kick_key, stream_key, waiting_key

__all__ = [
    "SLOTS",
    "DrainReport",
    "StreamDrainer",
    "StreamEntry",
    "lease_key",
    "payloads_of",
]

log = logging.getLogger(__name__)
SLOTS = 2
LEASE_MS = 10_000
MAX_SECONDS = 5.0  # a drain hands over after this long, so one source cannot hold a process
IDLE_BLOCK_MS = 50  # a drain that just stored events waits this long for more before it ends
LINGER_SECONDS = 0.005  # a busy drain's small read waits this long for more to join it

# Deletes a lease only when it is still the caller's (compare and delete).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# Renews a lease only when it is still the caller's; 0 when it was lost.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


# Acknowledges and deletes entries, forgets the batch they were recorded in, then takes what
# the deleted ones held off the waiting counter (never below zero: entries appended before
# the counter existed were not counted). KEYS: stream, waiting counter, batchof, batches.
# ARGV: the group, the batch id ('' for none), then each entry's id and event count.
_ACK = """
local ids, gone = {}, 0
for i = 3, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then gone = gone + tonumber(ARGV[i + 1]) end
end
redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
redis.call('HDEL', KEYS[3], unpack(ids))
if ARGV[2] ~= '' then redis.call('HDEL', KEYS[4], ARGV[2]) end
if gone > 0 and redis.call('DECRBY', KEYS[2], gone) < 0 then
  redis.call('SET', KEYS[2], 0)
end
return gone
"""


def batchof_key(source: str) -> str:
    """Each pending entry's batch id, recorded before the batch is stored."""
    return f"ingest:wh:{{{source}}}:batchof"


def batches_key(source: str) -> str:
    """Each recorded batch's entry ids, in order, space-separated."""
    return f"ingest:wh:{{{source}}}:batches"


def lease_key(source: str, slot: int) -> str:
    """The lease a running drain of ``source`` holds for ``slot``."""
    return f"ingest:wh:{{{source}}}:drain:{slot}"


@dataclass
class DrainReport:
    """What one drain did."""

    batches: int = 0
    events: int = 0
    dead_lettered: int = 0
    failed: int = 0
    reclaimed: int = 0


Store = Callable[[dict[str, Any]], None]
DeadLetter = Callable[[dict[str, Any], int], None]


class StreamDrainer:
    """Reads, acknowledges and reclaims a source's stream entries for one consumer.

    ``client`` may return bytes or text; one that decodes its replies in hiredis
    (``decode_responses=True, encoding_errors="surrogatepass"``, as the worker's drains use)
    saves decoding every field of every entry in Python.
    """

    def __init__(
        self,
        client: redis.Redis,
        consumer: str,
        batch_size: int,
        redeliver_after: float,
        max_deliveries: int,
    ) -> None:
        self._client = client
        self.consumer = consumer
        self.batch_size = batch_size
        self._idle_ms = max(1, int(redeliver_after * 1000))
        self._max_deliveries = max_deliveries
        self._release = client.register_script(_RELEASE)
        self._renew = client.register_script(_RENEW)
        self._ack = client.register_script(_ACK)
        # Events per entry of the last read, which sizes the next read; a first read asks for
        # a few entries, since those of batch requests may hold thousands each.
        self._per_entry = max(1.0, batch_size / 16)

    # -- leases -------------------------------------------------------------------------

    def acquire(self, source: str, slot: int) -> str | None:
        """Take ``slot``'s lease for a new drain: its token, or None when one runs already."""
        token = uuid.uuid4().hex
        taken = self._client.set(lease_key(source, slot), token, nx=True, px=LEASE_MS)
        return token if taken else None

    def renew(self, source: str, slot: int, token: str) -> bool:
        return bool(self._renew(keys=[lease_key(source, slot)], args=[token, LEASE_MS]))

    def release(self, source: str, slot: int, token: str) -> None:
        self._release(keys=[lease_key(source, slot)], args=[token])

    # -- the stream ---------------------------------------------------------------------

    def ensure_group(self, source: str) -> None:
        try:
            self._client.xgroup_create(stream_key(source), GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read_new(self, source: str, block_ms: int | None = None) -> list[StreamEntry]:
        """Entries never delivered before, about ``batch_size`` events' worth (entries of
        batch requests hold many, so the count follows the last read's events per entry);
        they become pending here.

        ``block_ms``: wait that long for the first entry when none is there yet."""
        # A wake-up published from now on means events this read did not see.
        pipe = self._client.pipeline(transaction=False)
        pipe.delete(kick_key(source))
        pipe.xreadgroup(
            GROUP,
            self.consumer,
            {stream_key(source): ">"},
            count=self.read_count(),
            block=block_ms,
        )
        try:
            _, reply = pipe.execute()
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group(source)
            return []
        entries = [entry_of(i, f) for _, items in reply or [] for i, f in items if f]
        if entries:
            self._per_entry = sum(e.size for e in entries) / len(entries)
        return entries

    def read_count(self) -> int:
        """How many entries the next read asks for."""
        return max(1, int(self.batch_size / self._per_entry))

    def reclaim(self, source: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Batch payloads of entries left pending by a drain that died or failed, idle long
        enough: those to store again, and those delivered too often already (for the DLQ).

        Entries of a recorded batch come back as that batch, whole (its entries this call did
        not find idle are claimed too) and under the same id; the others are grouped anew.
        """
        key = stream_key(source)
        try:
            pending = self._client.xpending_range(
                key, GROUP, min="-", max="+", count=self.read_count(), idle=self._idle_ms
            )
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            return [], []
        if not pending:
            return [], []
        ids = [p["message_id"] for p in pending]
        delivered = {text_of(p["message_id"]): int(p["times_delivered"]) for p in pending}
        entries = self._claim(source, ids, self._idle_ms)
        groups, loose = self._recorded_batches(source, entries)
        again: list[dict[str, Any]] = []
        exhausted: list[dict[str, Any]] = []

        def too_often(members: Sequence[StreamEntry]) -> bool:
            return any(delivered.get(e.id, 0) + 1 > self._max_deliveries for e in members)

        for members in groups:
            (exhausted if too_often(members) else again).extend(payloads_of(source, members))
        fresh: list[StreamEntry] = []
        stale: list[StreamEntry] = []
        for entry in loose:
            (stale if too_often([entry]) else fresh).append(entry)
        again += payloads_of(source, fresh, self.batch_size)
        exhausted += payloads_of(source, stale, self.batch_size)
        return again, exhausted

    def _claim(self, source: str, ids: Sequence[Any], min_idle_ms: int) -> list[StreamEntry]:
        """Take pending entries over for this consumer; those deleted meanwhile (stored by
        another drain) are acknowledged and left out."""
        if not ids:
            return []
        key = stream_key(source)
        claimed = self._client.xclaim(key, GROUP, self.consumer, min_idle_ms, list(ids))
        gone = [entry_id for entry_id, fields in claimed if not fields]
        if gone:
            self._client.xack(key, GROUP, *gone)
        return [entry_of(entry_id, fields) for entry_id, fields in claimed if fields]

    def _recorded_batches(
        self, source: str, entries: list[StreamEntry]
    ) -> tuple[list[list[StreamEntry]], list[StreamEntry]]:
        """``entries`` as the recorded batches they belong to (each whole, in its recorded
        order), and those of no recorded batch."""
        if not entries:
            return [], []
        names = self._client.hmget(batchof_key(source), [e.id for e in entries])
        recorded = sorted({text_of(n) for n in names if n})
        if not recorded:
            return [], entries
        found = {e.id: e for e in entries}
        members = self._client.hmget(batches_key(source), recorded)
        orders = [text_of(m).split(" ") for m in members if m]
        # Entries of these batches that this call did not find idle (or not at all).
        missing = [i for order in orders for i in order if i not in found]
        found.update((e.id, e) for e in self._claim(source, missing, 0))
        groups, placed = [], set()
        for order in orders:
            group = [found[i] for i in order if i in found]
            if len(group) == len(order):
                groups.append(group)
                placed.update(order)
            # A batch with entries gone was stored (one acknowledgement deletes them all):
            # what is left of it is grouped anew, and dedup finds its events stored.
        return groups, [e for e in found.values() if e.id not in placed]

    def record(self, source: str, payloads: Sequence[dict[str, Any]]) -> None:
        """Record each payload's entries as its batch, before anything of it is stored."""
        if not payloads:
            return
        pipe = self._client.pipeline(transaction=False)
        for payload in payloads:
            ids, batch_id = payload["streamIds"], payload["batchId"]
            pipe.hset(batchof_key(source), mapping=dict.fromkeys(ids, batch_id))
            pipe.hset(batches_key(source), batch_id, " ".join(ids))
        pipe.execute()

    def ack(
        self,
        source: str,
        ids: Sequence[str],
        sizes: Sequence[int] | None = None,
        batch_id: str | None = None,
    ) -> None:
        """Acknowledge and delete stored entries, forget ``batch_id``'s record, and take the
        events of the entries this call deleted (``sizes``: each entry's, one when not given)
        off the waiting counter, in one atomic step: an entry another drain deleted first is
        not counted twice."""
        if not ids:
            return
        counts = list(sizes) if sizes is not None else [1] * len(ids)
        args: list[Any] = [GROUP, batch_id or ""]
        for entry_id, count in zip(ids, counts, strict=True):
            args += [entry_id, count]
        keys = [stream_key(source), waiting_key(source), batchof_key(source), batches_key(source)]
        self._ack(keys=keys, args=args)

    def backlog(self, source: str) -> tuple[int, int]:
        """``(undelivered, pending)`` events of the source's stream."""
        key = stream_key(source)
        pipe = self._client.pipeline(transaction=False)
        pipe.xlen(key)
        pipe.xpending(key, GROUP)
        try:
            length, pending = pipe.execute()
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            return int(self._client.xlen(key)), 0
        count = int(pending.get("pending", 0)) if isinstance(pending, dict) else 0
        return max(0, int(length) - count), count

    def oldest_pending_idle(self, source: str) -> float | None:
        """Seconds the longest-waiting pending entry has been idle, or None when none is."""
        try:
            first = self._client.xpending_range(stream_key(source), GROUP, "-", "+", 1)
        except redis.exceptions.ResponseError:
            return None
        return int(first[0]["time_since_delivered"]) / 1000 if first else None

    # -- one drain ----------------------------------------------------------------------

    def drain(
        self,
        source: str,
        slot: int,
        token: str,
        store: Store,
        dead_letter: DeadLetter,
        spawn: Callable[[int], None] | None = None,
        max_seconds: float = MAX_SECONDS,
    ) -> DrainReport:
        """Store ``source``'s events until its stream has none left or ``max_seconds`` pass.

        ``store`` stores one batch payload (raising when it could not: the entries stay
        pending and are reclaimed later); ``dead_letter`` keeps a payload delivered too often,
        with its delivery count; ``spawn(slot)`` starts a drain for another slot when
        this one keeps reading full batches.
        """
        report = DrainReport()
        deadline = time.monotonic() + max_seconds
        again, exhausted = self.reclaim(source)
        report.reclaimed = sum(len(p["streamIds"]) for p in again + exhausted)
        for payload in exhausted:
            dead_letter(payload, self._max_deliveries)
            self._ack_payload(source, payload)
            report.dead_lettered += len(payload["events"])
        if again and not self._store_all(source, again, store, report):
            self.release(source, slot, token)
            return report
        entries: list[StreamEntry] = []
        busy = False
        while True:
            if not entries:
                # While events keep coming, wait a moment for the next ones rather than end
                # this task and have the dispatcher start another (a task costs far more).
                entries = self.read_new(source, IDLE_BLOCK_MS if busy else None)
                if busy and 2 <= events_in(entries) < self.batch_size // 4:
                    # A steady stream (several per read): let a few more milliseconds' events
                    # join this batch.
                    # Each batch is a sink file and a few round trips, which cost far more
                    # than the events in it; the wait stays well inside the latency target.
                    time.sleep(LINGER_SECONDS)
                    entries += self.read_new(source)
                busy = bool(entries)
            if not entries:
                self.release(source, slot, token)
                # An event appended after the last read may have woken nobody: look again.
                undelivered, _ = self.backlog(source)
                if undelivered == 0 or time.monotonic() > deadline:
                    return report
                if self._client.set(lease_key(source, slot), token, nx=True, px=LEASE_MS) is None:
                    return report  # another drain took the slot and will read them
                continue
            if not self._store_all(
                source, payloads_of(source, entries, self.batch_size), store, report
            ):
                self.release(source, slot, token)
                return report
            full = events_in(entries) >= self.batch_size
            entries = []
            if full and spawn is not None and slot + 1 < SLOTS:
                spawn(slot + 1)
                spawn = None
            if time.monotonic() > deadline or not self.renew(source, slot, token):
                self.release(source, slot, token)
                return report

    def _store_all(
        self, source: str, payloads: list[dict[str, Any]], store: Store, report: DrainReport
    ) -> bool:
        self.record(source, payloads)
        for payload in payloads:
            try:
                store(payload)
            except Exception as exc:  # left pending: reclaimed after redeliverAfter
                log.warning(
                    "storing %d events of %s failed; they stay pending: %s",
                    len(payload["events"]),
                    source,
                    exc,
                )
                report.failed += len(payload["events"])
                return False
            self._ack_payload(source, payload)
            report.batches += 1
            report.events += len(payload["events"])
        return True

    def _ack_payload(self, source: str, payload: dict[str, Any]) -> None:
        self.ack(source, payload["streamIds"], payload["streamSizes"], payload["batchId"])
