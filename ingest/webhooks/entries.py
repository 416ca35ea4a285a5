"""Stream entries as the drains read them, and the batch payloads they store.

An entry holds one single event, or the accepted events of one batch request (see
``ingest.webhooks.stream.entry_fields``); :func:`payloads_of` groups the entries of a read
into batch payloads (``ingest.webhooks.storage``), each named by its entry ids.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ingest.isotime import epoch_to_iso

__all__ = ["StreamEntry", "entry_of", "events_in", "payloads_of", "text_of"]


@dataclass(frozen=True)
class StreamEntry:
    """One accepted event as its stream holds it (see ``ingest.webhooks.stream.entry_fields``)."""

    id: str
    fields: Mapping[str, str]

    @property
    def size(self) -> int:
        """How many events the entry holds: one, or a batch request's accepted events (what
        its deletion takes off the source's waiting counter)."""
        count = self.fields.get("n")
        return int(count) if count and count.isdigit() else 1

    def payload_events(self) -> list[dict[str, Any]]:
        """The entry's events as a batch payload carries them (see ``ingest.webhooks.storage``)."""
        f = self.fields
        epoch = float(f.get("r") or 0)
        received = _iso(epoch)
        if not f.get("n"):
            return [
                {
                    "eventJson": f.get("e", ""),
                    "eventId": f.get("k"),
                    "contentHash": f.get("h"),
                    "receivedAt": received,
                    "receivedAtEpoch": epoch,
                    "observedAt": f.get("o"),
                }
            ]
        texts = f["E"].split("\n")
        ids, observed, hashes = json.loads(f["K"]), json.loads(f["O"]), f["H"]
        accepted = f.get("A") or "N" * len(texts)  # which of the request's events to store
        if not len(texts) == len(ids) == len(observed) == len(hashes) // 64 == len(accepted):
            raise ValueError(f"stream entry {self.id} is not a well-formed batch entry")
        events = [
            {
                "eventJson": text,
                "eventId": event_id,
                "contentHash": hashes[64 * i : 64 * i + 64],
                "receivedAt": received,
                "receivedAtEpoch": epoch,
                "observedAt": seen,
            }
            for i, (text, event_id, seen, code) in enumerate(
                zip(texts, ids, observed, accepted, strict=True)
            )
            if code == "N"
        ]
        if len(events) != self.size:
            raise ValueError(f"stream entry {self.id} is not a well-formed batch entry")
        return events

    def terms(self) -> tuple[str, str, str | None]:
        """What every event of one stored batch shares: source URI, purpose, classification."""
        f = self.fields
        return f.get("u", ""), f.get("p", "webhook"), f.get("c")


def payloads_of(
    source: str, entries: Sequence[StreamEntry], max_events: int | None = None
) -> list[dict[str, Any]]:
    """Batch payloads of ``entries``, one per distinct terms (and per ``max_events`` events,
    an entry never split), each named by its entry ids.

    The same entries always give the same ``batchId``, so a batch stored before its
    acknowledgement was lost is found already stored. An entry that cannot be read (only this
    package writes entries: a bug, or a hand-made one) becomes a payload of its own, holding
    its fields as found: storing it fails, and after its deliveries it reaches the DLQ.
    """
    groups: dict[tuple[str, str, str | None], list[tuple[StreamEntry, list[Any]]]] = {}
    broken: list[StreamEntry] = []
    for entry in entries:
        try:
            events = entry.payload_events()
        except (ValueError, KeyError, TypeError):
            broken.append(entry)
            continue
        groups.setdefault(entry.terms(), []).append((entry, events))
    payloads = []
    for (uri, purpose, classification), members in groups.items():
        for chunk in _chunks(members, max_events):
            payloads.append(
                _payload(source, [e for e, _ in chunk], uri, purpose, classification)
                | {"events": [event for _, events in chunk for event in events]}
            )
    for entry in broken:
        uri, purpose, classification = entry.terms()
        payloads.append(
            _payload(source, [entry], uri, purpose, classification)
            | {"events": [{"malformedEntry": dict(entry.fields)}]}
        )
    return payloads


def _chunks(
    members: list[tuple[StreamEntry, list[Any]]], max_events: int | None
) -> list[list[tuple[StreamEntry, list[Any]]]]:
    if max_events is None:
        return [members]
    chunks: list[list[tuple[StreamEntry, list[Any]]]] = [[]]
    size = 0
    for member in members:
        if chunks[-1] and size + len(member[1]) > max_events:
            chunks.append([])
            size = 0
        chunks[-1].append(member)
        size += len(member[1])
    return chunks


def _payload(
    source: str,
    members: Sequence[StreamEntry],
    uri: str,
    purpose: str,
    classification: str | None,
) -> dict[str, Any]:
    ids = "\n".join(e.id for e in members).encode()
    return {
        "batchId": hashlib.sha256(ids).hexdigest()[:32],
        "source": source,
        "sourceUri": uri,
        "purpose": purpose,
        "classification": classification,
        "streamIds": [e.id for e in members],
        "streamSizes": [e.size for e in members],
        "traces": [e.fields["t"] for e in members if e.fields.get("t")],
    }


def events_in(entries: Sequence[StreamEntry]) -> int:
    return sum(e.size for e in entries)


def text_of(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


# The events of one request share their receipt time: formatted once, not once per event.
_iso = functools.lru_cache(maxsize=1024)(epoch_to_iso)


def entry_of(entry_id: bytes | str, fields: Mapping[Any, Any]) -> StreamEntry:
    if isinstance(entry_id, str):  # a client that decodes replies (see StreamDrainer)
        return StreamEntry(entry_id, fields)
    return StreamEntry(text_of(entry_id), {text_of(k): text_of(v) for k, v in fields.items()})
