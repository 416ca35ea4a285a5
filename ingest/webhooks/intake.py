"""What the webhook endpoints decide per source and per event, independent of any web framework.

A :class:`WebhookSource` is a source's configuration prepared once (signature config, token
buckets); the functions here derive an event's observation time and settle the per-event
outcome of a batch from its idempotency claims.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from ingest.config import HttpConfig, SignatureSettings, SourceConfig
from ingest.isotime import epoch_to_iso
from ingest.webhooks.event_schema import EventSchema, load_event_schema
from ingest.webhooks.idempotency import ClaimOutcome
from ingest.webhooks.providers import PRESETS, Preset
from ingest.webhooks.signatures import SignatureConfig, check_signature_config

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
    provider: str | None = None
    id_header: str | None = None
    observed_at_header: str | None = None
    public_url: str | None = None  # without a trailing slash; Twilio signs it + path and query
    form_bodies: bool = False  # application/x-www-form-urlencoded bodies are events too

    @classmethod
    def from_config(
        cls, name: str, source: SourceConfig, http: HttpConfig, schemas_dir: str | None = None
    ) -> WebhookSource:
        """Prepare ``source``; ``ValueError`` naming the source when it could never verify.

        A ``provider`` preset fills in what the source does not give explicitly.
        """
        preset = PRESETS.get(source.provider or "")
        signature = _signature_config(source.signature, preset)
        try:
            check_signature_config(signature)
        except ValueError as exc:
            raise ValueError(f"http.sources.{name}.signature: {exc}") from None
        if signature.scheme == "twilio" and not source.public_url:
            raise ValueError(f"http.sources.{name}.publicUrl: the twilio scheme needs it")
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
            id_field=_own_or_preset(source, "id_field", preset),
            observed_at_field=_own_or_preset(source, "observed_at_field", preset),
            rate_checks=(
                (f"webhooks:source:{name}", own.max_per_second, own.burst_size),
                (GLOBAL_BUCKET, glob.max_per_second, glob.burst_size),
            ),
            event_schema=schema,
            provider=source.provider,
            id_header=_own_or_preset(source, "id_header", preset),
            observed_at_header=_own_or_preset(source, "observed_at_header", preset),
            public_url=source.public_url.rstrip("/") if source.public_url else None,
            form_bodies=preset is not None and preset.form_bodies,
        )

    def smallest_burst(self) -> int:
        """The largest cost any request of this source can ever be granted."""
        return min(burst for _, _, burst in self.rate_checks)


def _own_or_preset(source: SourceConfig, name: str, preset: Preset | None) -> str | None:
    """A source's own setting when it has one, else the preset's."""
    own: str | None = getattr(source, name)
    if own is not None or preset is None:
        return own
    found: str | None = getattr(preset, name)
    return found


_SIGNATURE_DEFAULTS = SignatureConfig("none")


def _signature_config(sig: SignatureSettings, preset: Preset | None) -> SignatureConfig:
    """The signature settings the source gives, over the preset's, over the defaults."""

    def pick(name: str) -> Any:
        for found in (getattr(sig, name), getattr(preset, name, None)):
            if found is not None:
                return found
        return getattr(_SIGNATURE_DEFAULTS, name)

    scheme = sig.scheme or (preset.scheme if preset is not None else None)
    if scheme is None:  # SourceConfig refuses this; a hand-built config may not have been
        raise ValueError("signature.scheme is required unless the source names a provider")
    return SignatureConfig(
        scheme=scheme,
        secrets=tuple(sig.secrets),
        header=pick("header"),
        prefix=pick("prefix"),
        tolerance_seconds=pick("tolerance_seconds"),
        encoding=pick("encoding"),
    )


def webhook_sources(http: HttpConfig, schemas_dir: str | None = None) -> dict[str, WebhookSource]:
    """Every configured source by name; ``ValueError`` names the first misconfigured one."""
    return {
        name: WebhookSource.from_config(name, cfg, http, schemas_dir)
        for name, cfg in http.sources.items()
    }


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
