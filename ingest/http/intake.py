"""What the webhook endpoints decide per source and per event, independent of any web framework.

A :class:`WebhookSource` is a source's configuration prepared once (signature config, token
buckets); the functions here derive an event's observation time and settle the per-event
outcome of a batch from its idempotency claims.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from ingest.config import HttpConfig, SourceConfig
from ingest.http.event_schema import EventSchema, load_event_schema
from ingest.http.idempotency import ClaimOutcome
from ingest.http.signatures import SignatureConfig, check_signature_config

__all__ = [
    "GLOBAL_BUCKET",
    "RateCheck",
    "WebhookSource",
    "batch_statuses",
    "epoch_to_iso",
    "observed_at",
    "webhook_sources",
]

RateCheck = tuple[str, float, int]
GLOBAL_BUCKET = "webhooks:global"

_STATUS_OF = {
    ClaimOutcome.NEW: "accepted",
    ClaimOutcome.DUPLICATE: "duplicate",
    ClaimOutcome.IN_FLIGHT: "in_flight",
    ClaimOutcome.CONFLICT: "conflict",
}


@dataclass(frozen=True)
class WebhookSource:
    """A configured webhook source, ready for requests."""

    name: str
    signature: SignatureConfig
    purpose: str
    classification: str | None
    id_field: str | None
    observed_at_field: str | None
    rate_checks: tuple[RateCheck, ...]
    event_schema: EventSchema | None = None

    @classmethod
    def from_config(
        cls, name: str, source: SourceConfig, http: HttpConfig, schemas_dir: str | None = None
    ) -> WebhookSource:
        """Prepare ``source``; ``ValueError`` naming the source when it could never verify."""
        sig = source.signature
        signature = SignatureConfig(
            scheme=sig.scheme,
            secrets=tuple(sig.secrets),
            header=sig.header,
            prefix=sig.prefix,
            tolerance_seconds=sig.tolerance_seconds,
        )
        try:
            check_signature_config(signature)
        except ValueError as exc:
            raise ValueError(f"http.sources.{name}.signature: {exc}") from None
        schema = None
        if source.event_schema:
            try:
                schema = load_event_schema(source.event_schema, schemas_dir)
            except ValueError as exc:
                raise ValueError(f"http.sources.{name}.eventSchema: {exc}") from None
        own = source.rate_limit or http.rate_limit
        glob = http.global_rate_limit
        return cls(
            name=name,
            signature=signature,
            purpose=source.purpose,
            classification=source.classification,
            id_field=source.id_field,
            observed_at_field=source.observed_at_field,
            rate_checks=(
                (f"webhooks:source:{name}", own.max_per_second, own.burst_size),
                (GLOBAL_BUCKET, glob.max_per_second, glob.burst_size),
            ),
            event_schema=schema,
        )

    def smallest_burst(self) -> int:
        """The largest cost any request of this source can ever be granted."""
        return min(burst for _, _, burst in self.rate_checks)


def webhook_sources(http: HttpConfig, schemas_dir: str | None = None) -> dict[str, WebhookSource]:
    """Every configured source by name; ``ValueError`` names the first misconfigured one."""
    return {
        name: WebhookSource.from_config(name, cfg, http, schemas_dir)
        for name, cfg in http.sources.items()
    }


def epoch_to_iso(seconds: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds and a ``Z``."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def observed_at(
    event: Mapping[str, Any], field: str | None, webhook_timestamp: str | None
) -> str | None:
    """When the event was observed: the source's ``observedAtField`` if it holds a time, else
    the ``webhook-timestamp`` header, else None.

    The event's own field wins because a sender sets ``webhook-timestamp`` anew on every
    delivery attempt, so it says when the event was sent, not when it happened.
    """
    if field:
        found = _field_time(event, field)
        if found is not None:
            return found
    text = (webhook_timestamp or "").strip()
    if text.isdigit() and len(text) <= 12:
        return _whole_seconds_to_iso(int(text))
    return None


@lru_cache(maxsize=1024)  # senders stamp whole seconds: one conversion serves a second's events
def _whole_seconds_to_iso(seconds: int) -> str:
    return epoch_to_iso(seconds)


def _lookup(event: Mapping[str, Any], path: str) -> Any:
    """The literal key first, then ``path`` as a dotted path (as idempotency keys are found)."""
    if path in event:
        return event[path]
    value: Any = event
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _field_time(event: Mapping[str, Any], path: str) -> str | None:
    value = _lookup(event, path)
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and math.isfinite(value) and 0 <= value < 1e11:
        return epoch_to_iso(float(value))
    if isinstance(value, str) and value.strip():
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None  # not a time provenance could hold; keep the event, drop the claim
        return value
    return None


def batch_statuses(
    keys: Sequence[str],
    hashes: Sequence[str],
    claim: Callable[[list[tuple[str, str]]], list[ClaimOutcome]],
) -> list[str]:
    """Each event's status in a batch: ``accepted``, ``duplicate``, ``in_flight``, ``conflict``.

    ``claim`` is called once with each distinct key (at its first position) and its hash. A
    repeat of a key later in the same batch is a ``duplicate`` of its first occurrence when the
    content matches (or shares its first occurrence's ``in_flight``/``conflict``), and a
    ``conflict`` when it does not.
    """
    first: dict[str, int] = {}
    for index, key in enumerate(keys):
        first.setdefault(key, index)
    firsts = sorted(first.values())
    outcomes = claim([(keys[i], hashes[i]) for i in firsts])
    statuses: list[str] = [""] * len(keys)
    for index, outcome in zip(firsts, outcomes, strict=True):
        statuses[index] = _STATUS_OF[outcome]
    for index, key in enumerate(keys):
        origin = first[key]
        if origin == index:
            continue
        if hashes[index] != hashes[origin]:
            statuses[index] = "conflict"
        elif statuses[origin] in ("accepted", "duplicate"):
            statuses[index] = "duplicate"
        else:
            statuses[index] = statuses[origin]
    return statuses
