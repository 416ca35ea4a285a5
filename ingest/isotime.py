"""The one way this project writes a moment: ISO 8601, UTC, milliseconds, a ``Z`` suffix.

Provenance timestamps, DLQ failure times and webhook observation times all use it, so they
sort and compare as text.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["epoch_to_iso", "iso_utc", "utc_now_iso"]


def iso_utc(moment: datetime) -> str:
    """``moment`` as ``2026-12-06T11:15:16.123Z``; a naive time is taken as UTC, never local."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now_iso() -> str:
    """The current time, as :func:`iso_utc` writes it."""
    return iso_utc(datetime.now(UTC))


def epoch_to_iso(seconds: float) -> str:
    """Epoch seconds, as :func:`iso_utc` writes them."""
    return iso_utc(datetime.fromtimestamp(seconds, UTC))
