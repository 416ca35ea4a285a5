"""Storing a batch of accepted webhook events: provenance, content dedup, one sink file per batch.

The batch payload is what the web process publishes (see ``webapp.publisher``)::

    {"batchId": hex, "source": name, "sourceUri": url, "purpose": ..., "classification": ...,
     "events": [{"eventJson": canonical JSON text, "eventId": key, "contentHash": hex,
                 "receivedAt": ISO, "receivedAtEpoch": float, "observedAt": ISO | null}]}

``eventJson`` must be the event's canonical JSON (``ingest.hashing.canonical_json``), as the
web sends it. An event may also be given as an ``"event"`` object instead (hand-built or
replayed payloads); it is canonicalised and hashed here.

Storing is idempotent: the file is named by the batch id, and dedup claims are owned by the
batch, so a re-executed batch neither stores an event twice nor loses one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ingest.dedup import DedupIndex, identities_from_hex
from ingest.hashing import canonical_json, sha256_hex
from ingest.provenance import ProvenanceBuilder
from ingest.sinks import Sink

__all__ = ["StoredBatch", "batch_name", "dedup_scope", "store_event_batch"]


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
    events = [_event_of(entry) for entry in entries]
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
    records = [
        {
            "data": event,
            "provenance": builder.stamp(
                content_hash,
                observed_at=entry.get("observedAt"),
                eventId=entry.get("eventId"),
                receivedAt=entry.get("receivedAt"),
            ),
        }
        for entry, (event, content_hash), kept in zip(entries, events, keep, strict=True)
        if kept
    ]
    if records:
        sink.write_records(name, records)
    if dedup is not None:
        # The file is durable now; a re-run finds it, so the batch's claim record can go.
        dedup.forget_owner(dedup_scope(source), batch_id)
    return StoredBatch(batch_id, len(records), len(events) - len(records))
