"""One ISO 8601 form for every timestamp the project writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from ingest.isotime import epoch_to_iso, iso_utc, utc_now_iso


def test_aware_times_are_written_in_utc_with_milliseconds() -> None:
    moment = datetime(2026, 12, 6, 12, 15, 16, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert iso_utc(moment) == "2026-12-06T11:15:16.123Z"


def test_a_naive_time_is_taken_as_utc_not_local() -> None:
    assert iso_utc(datetime(2026, 12, 6, 11, 15, 16)) == "2026-12-06T11:15:16.000Z"


def test_epoch_seconds() -> None:
    assert epoch_to_iso(0) == "1970-01-01T00:00:00.000Z"
    assert epoch_to_iso(1.5) == "1970-01-01T00:00:01.500Z"


def test_now_is_utc_and_parses_back() -> None:
    written = utc_now_iso()
    assert written.endswith("Z") and len(written) == len("2026-12-06T11:15:16.123Z")
    assert datetime.fromisoformat(written).tzinfo == UTC
