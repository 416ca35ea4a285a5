"""Storing a batch of accepted webhook events: provenance, content dedup, one sink file per batch.

The batch payload is what the web process publishes (see ``ingest.webhooks.drain``)::

    {"batchId": hex, "source": name, "sourceUri": url, "purpose": ..., "classification": ...,
     "events": [{"eventJson": canonical JSON text, "eventId": key, "contentHash": hex,
                 "receivedAt": ISO, "receivedAtEpoch": float, "observedAt": ISO | null}]}

``eventJson`` must be the event's canonical JSON (``ingest.hashing.canonical_json``), as the
web sends it. An event may also be given as an ``"event"`` object instead (hand-built or
replayed payloads); it is canonicalised and hashed here.

A sink that takes records already encoded as JSON lines (the file sink) gets them so: a
canonical ``eventJson`` is already the text its record's ``data`` is written as, and the
provenance the batch's records share is encoded once, so an event is neither decoded nor
encoded again here. The lines are the bytes ``write_records`` would have written.

Storing is idempotent: the file is named by the batch id, and dedup claims are owned by the
batch, so a re-executed batch neither stores an event twice nor loses one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

from ingest.dedup import DedupIndex, identities_from_hex
from ingest.hashing import canonical_json, sha256_hex
from ingest.provenance import ProvenanceBuilder
from ingest.sinks import Sink

__all__ = [
    "StoredBatch",
    "batch_name",
    "dedup_scope",
    "event_provenance",
    "record_lines",
    "store_event_batch",
]

# How sinks write a record (``json.dumps(record, ensure_ascii=False, separators=(",", ":"))``),
# made once.
log = logging.getLogger(__name__)
_RECORD_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_PLACE = "\x00ingestedAt\x00"  # stands in for a value while the shared fields are encoded


@dataclass(frozen=True)
class StoredBatch:
    """What storing one batch did."""

    batch_id: str
    stored: int
    duplicates: int
    already_stored: bool = False

    def summary(self) -> dict[str, Any]:
        """A small JSON summary (the Celery task's result)."""
        return {
            "batchId": self.batch_id,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "alreadyStored": self.already_stored,
        }


def batch_name(source: str, batch_id: str) -> str:
    """The sink name of a batch: ``webhooks/<source>/<batchId>``."""
    return f"webhooks/{source}/{batch_id}"


def dedup_scope(source: str) -> str:
    """The content-dedup scope of a webhook source."""
    return f"http:{source}"


def _event_of(entry: Mapping[str, Any]) -> tuple[Any, str]:
    """The event and its contentHash, checked so provenance always matches the data.

    The web sends each event's canonical JSON text and its hash: when the text hashes to the
    hash sent, the text is canonical and the hash is right, and re-encoding it (the costly
    part) is skipped. Anything else (a hand-built payload, an ``"event"`` object) is
    canonicalised and hashed here.
    """
    text = entry.get("eventJson")
    if isinstance(text, str):
        event = json.loads(text)
        digest = sha256_hex(text.encode("utf-8"))
        if digest == entry.get("contentHash"):
            return event, digest
    else:
        event = entry["event"]
    return event, sha256_hex(canonical_json(event))


def _json_text(value: Any) -> str:
    """``value`` as a record's JSON holds it (``_RECORD_ENCODER``); strings without an encoder."""
    if type(value) is str:
        return encode_basestring(value)
    if value is None:
        return "null"
    return _RECORD_ENCODER.encode(value)


def _event_text(entry: Mapping[str, Any]) -> tuple[str, str]:
    """:func:`_event_of`, with the event as the JSON text its record holds.

    A canonical ``eventJson`` (it hashes to the contentHash sent) is that text already:
    decoding it and encoding the result again, keys in the order they came, gives it back.
    """
    text = entry.get("eventJson")
    if isinstance(text, str):
        digest = sha256_hex(text.encode("utf-8"))
        if digest == entry.get("contentHash"):
            return text, digest
    event, digest = _event_of(entry)
    return _json_text(event), digest


def record_lines(
    builder: ProvenanceBuilder,
    items: Sequence[tuple[str, str, Mapping[str, Any]]],
) -> bytes:
    """The JSON lines of the records ``{"data": ..., "provenance": event_provenance(...)}`` of
    ``(data JSON text, contentHash, payload entry)`` items, as the file sink writes records.

    The fields the batch shares are encoded once; see :func:`event_provenance` for the rest.
    """
    common = builder.common()
    stored_at = common["ingestedAt"]
    # ingestedAt differs per event, in the place the shared fields give it: split around it.
    common["ingestedAt"] = _PLACE
    before, after = _RECORD_ENCODER.encode(common)[:-1].split(_json_text(_PLACE))
    tail = f',"storedAt":{_json_text(stored_at)}}}}}\n'
    lines = []
    # A batch's events mostly share their receipt time (and often their observedAt): each
    # distinct value is encoded once. A contentHash here is a hex digest (checked against
    # the data by _event_text): it needs no escaping.
    texts: dict[str, str] = {}

    def text(value: Any) -> str:
        if type(value) is not str:
            return _json_text(value)  # None, or what a hand-built payload holds
        found = texts.get(value)
        if found is None:
            found = texts[value] = encode_basestring(value)
        return found

    for data, content_hash, entry in items:
        received_at = entry.get("receivedAt")
        line = f'{{"data":{data},"provenance":{before}{text(received_at or stored_at)}'
        line += f'{after},"contentHash":"{content_hash}"'
        line += f',"observedAt":{text(entry.get("observedAt"))}'
        event_id = entry.get("eventId")
        if event_id is not None:
            line += f',"eventId":{_json_text(event_id)}'
        if received_at is not None:
            line += f',"receivedAt":{text(received_at)}'
        lines.append(line + tail)
    return "".join(lines).encode()


def event_provenance(
    builder: ProvenanceBuilder, content_hash: str, entry: Mapping[str, Any]
) -> dict[str, Any]:
    """An event's provenance: ``ingestedAt`` is when the web received it (``receivedAt``,
    kept too), ``storedAt`` when this batch was stored (the builder's time)."""
    received_at = entry.get("receivedAt")
    record = builder.stamp(
        content_hash,
        observed_at=entry.get("observedAt"),
        eventId=entry.get("eventId"),
        receivedAt=received_at,
    )
    stored_at = record["ingestedAt"]
    record["ingestedAt"] = received_at or stored_at
    record["storedAt"] = stored_at
    return record


def store_event_batch(
    payload: Mapping[str, Any],
    sink: Sink,
    dedup: DedupIndex | None,
    purpose: str,
    classification: str | None = None,
) -> StoredBatch:
    """Store a batch's events, each once by content, with provenance, as one sink file.

    ``purpose`` and ``classification`` apply when the payload does not carry its own.
    """
    batch_id, source = str(payload["batchId"]), str(payload["source"])
    name = batch_name(source, batch_id)
    if sink.exists(name):
        return StoredBatch(batch_id, 0, 0, already_stored=True)
    entries = list(payload["events"])
    as_lines = bool(getattr(sink, "writes_json_lines", False))
    events = [(_event_text if as_lines else _event_of)(entry) for entry in entries]
    keep = [True] * len(events)
    if dedup is not None and events:
        mask = dedup.claim(
            dedup_scope(source), batch_id, identities_from_hex([h for _, h in events])
        )
        keep = [bool(k) for k in mask]
    builder = ProvenanceBuilder(
        source_id=source,
        source_type="HTTP",
        source_uri=str(payload["sourceUri"]),
        purpose=str(payload.get("purpose") or purpose),
        classification=payload.get("classification", classification),
        ingested_by=source,
        batch_id=batch_id,
    )
    written = False  # whether the batch's file was written (or had nothing to hold)
    try:
        if as_lines:
            items = [
                (text, content_hash, entry)
                for entry, (text, content_hash), kept in zip(entries, events, keep, strict=True)
                if kept
            ]
            if items:
                line_sink: Any = sink  # a FileSink, or one wrapping it: it has write_json_lines
                line_sink.write_json_lines(name, record_lines(builder, items), len(items))
            written = True
            return _stored(dedup, source, batch_id, len(items), len(events))
        records = [
            {
                "data": event,
                "provenance": event_provenance(builder, content_hash, entry),
            }
            for entry, (event, content_hash), kept in zip(entries, events, keep, strict=True)
            if kept
        ]
        if records:
            sink.write_records(name, records)
        written = True
        return _stored(dedup, source, batch_id, len(records), len(events))
    except Exception:
        if dedup is not None and not written:
            # Nothing was stored: take the claims back. A drain reads these events again,
            # perhaps grouped with others under another batch id, which must not find them
            # claimed by this one and drop them as duplicates.
            _release_quietly(dedup, source, batch_id)
        raise


def _release_quietly(dedup: DedupIndex, source: str, batch_id: str) -> None:
    try:
        dedup.release_owner(dedup_scope(source), batch_id)
    except Exception:  # Redis away too: the claims stay (see docs/guarantees.md)
        log.warning("could not release the dedup claims of batch %s", batch_id, exc_info=True)


def _stored(
    dedup: DedupIndex | None, source: str, batch_id: str, stored: int, events: int
) -> StoredBatch:
    if dedup is not None:
        # The file is durable now; a re-run finds it, so the batch's claim record can go.
        dedup.forget_owner(dedup_scope(source), batch_id)
    return StoredBatch(batch_id, stored, events - stored)
