"""The dead-letter entry model: its JSON shape and the entry builders of each kind."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from pydantic import ValidationError

from ingest.dlq import (
    DeadLetterEntry,
    FailureDetail,
    entry_id_for,
    event_entry,
    row_entry,
    task_entry,
)

FIELDS = {
    "id",
    "kind",
    "source",
    "reason",
    "attempts",
    "firstFailedAt",
    "lastFailedAt",
    "payload",
    "error",
    "importId",
    "retryHistory",
}


def _row(raw: bytes = b"1,caf\xe9,2024-13-01", **overrides: object) -> DeadLetterEntry:
    args: dict[str, object] = dict(
        object_uri="s3://bucket/data/entities.csv",
        etag='"abc123"',
        line=7,
        offset=512,
        raw=raw,
        reason="column 'born' failed check: valid date",
        import_id="imp-1",
        schema="entities",
        purpose="case-4711",
        classification="internal",
        mapping={"Name": "name"},
        failure_cases=[{"column": "born", "failure_case": "x"}],
        header=["id", "Name", "born"],
    )
    args.update(overrides)
    return row_entry(**args)  # type: ignore[arg-type]


def _boom() -> ValueError:
    try:
        raise ValueError("sink unreachable")
    except ValueError as exc:
        return exc


class TestJsonShape:
    def test_fields_are_camel_case(self) -> None:
        entry = DeadLetterEntry(kind="task", source="s3://b/k", reason="boom")
        assert set(json.loads(entry.to_json())) == FIELDS

    def test_accepts_both_field_names_and_aliases(self) -> None:
        by_alias = DeadLetterEntry.model_validate(
            {"kind": "row", "source": "s", "reason": "r", "importId": "i1"}
        )
        by_name = DeadLetterEntry(kind="row", source="s", reason="r", import_id="i1")
        assert by_alias.import_id == by_name.import_id == "i1"

    def test_round_trips_through_json(self) -> None:
        entry = _row()
        assert DeadLetterEntry.model_validate_json(entry.to_json()) == entry

    def test_unknown_keys_from_a_newer_release_are_ignored(self) -> None:
        data = json.loads(_row().to_json()) | {"futureField": 1}
        assert DeadLetterEntry.model_validate(data).id == _row().id

    def test_attempts_start_at_one(self) -> None:
        assert DeadLetterEntry(kind="event", source="webhook:a", reason="r").attempts == 1

    @pytest.mark.parametrize("kind", ["job", "", "ROW"])
    def test_refuses_unknown_kinds(self, kind: str) -> None:
        with pytest.raises(ValidationError):
            DeadLetterEntry(kind=kind, source="s", reason="r")  # type: ignore[arg-type]

    @pytest.mark.parametrize("entry_id", ["", "has space", "new\nline"])
    def test_refuses_ids_that_cannot_be_keys(self, entry_id: str) -> None:
        with pytest.raises(ValidationError):
            DeadLetterEntry(id=entry_id, kind="row", source="s", reason="r")


class TestFields:
    def test_reason_is_one_line(self) -> None:
        entry = DeadLetterEntry(kind="task", source="s", reason="Traceback:\n  line 1\n\tboom ")
        assert entry.reason == "Traceback: line 1 boom"

    def test_reason_is_bounded(self) -> None:
        assert len(DeadLetterEntry(kind="task", source="s", reason="x" * 5000).reason) == 500

    def test_empty_reason_is_refused(self) -> None:
        with pytest.raises(ValidationError):
            DeadLetterEntry(kind="task", source="s", reason=" \n ")

    def test_times_are_utc_iso_with_z(self) -> None:
        berlin = timezone(timedelta(hours=2))
        entry = DeadLetterEntry.model_validate(
            {
                "kind": "task",
                "source": "s",
                "reason": "r",
                "first_failed_at": datetime(2024, 5, 1, 14, 0, tzinfo=berlin),
            }
        )
        assert entry.first_failed_at == "2024-05-01T12:00:00.000Z"
        assert entry.last_failed_at == entry.first_failed_at

    def test_naive_times_are_taken_as_utc(self) -> None:
        entry = DeadLetterEntry.model_validate(
            {"kind": "task", "source": "s", "reason": "r", "firstFailedAt": "2024-05-01T12:00:00"}
        )
        assert entry.first_failed_at == "2024-05-01T12:00:00.000Z"

    def test_generated_ids_are_unique_and_sort_by_time(self) -> None:
        ids = [DeadLetterEntry(kind="task", source="s", reason="r").id for _ in range(200)]
        assert len(set(ids)) == 200
        assert [i.split("-")[0] for i in ids] == sorted(i.split("-")[0] for i in ids)

    def test_deterministic_ids_depend_on_every_part(self) -> None:
        assert entry_id_for("row", "s3://b/k", "e", 1) == entry_id_for("row", "s3://b/k", "e", 1)
        assert entry_id_for("row", "s3://b/k", "e", 1) != entry_id_for("row", "s3://b/k", "e", 2)
        assert entry_id_for("row", "a", "b").startswith("row:")


class TestRowEntry:
    def test_non_utf8_row_keeps_its_exact_bytes(self) -> None:
        raw = b"1,caf\xe9,\xff\xfe end"
        restored = DeadLetterEntry.model_validate_json(_row(raw).to_json())
        assert restored.raw_row() == raw
        assert restored.payload["rawText"] == "1,caf\ufffd,\ufffd\ufffd end"

    def test_holds_what_a_replay_needs(self) -> None:
        payload = _row().payload
        assert {k: payload[k] for k in ("schema", "purpose", "classification", "mapping")} == {
            "schema": "entities",
            "purpose": "case-4711",
            "classification": "internal",
            "mapping": {"Name": "name"},
        }
        assert (payload["line"], payload["offset"], payload["etag"]) == (7, 512, '"abc123"')
        assert payload["header"] == ["id", "Name", "born"]

    def test_source_and_import_id(self) -> None:
        entry = _row()
        assert (entry.kind, entry.source, entry.import_id) == (
            "row",
            "s3://bucket/data/entities.csv",
            "imp-1",
        )

    def test_same_row_of_same_object_version_gets_same_id(self) -> None:
        assert _row().id == _row(reason="another reason").id
        assert _row().id != _row(etag='"changed"').id
        assert _row().id != _row(offset=513).id

    def test_pandera_failure_cases_become_plain_json(self) -> None:
        cases = [
            {
                "index": np.int64(3),
                "failure_case": float("nan"),
                "when": datetime(2024, 1, 1, tzinfo=UTC),
            }
        ]
        entry = DeadLetterEntry.model_validate_json(_row(failure_cases=cases).to_json())
        assert entry.payload["failureCases"] == [
            {"index": 3, "failure_case": None, "when": "2024-01-01 00:00:00+00:00"}
        ]


class TestTaskAndEventEntries:
    def test_task_entry_carries_call_and_traceback(self) -> None:
        entry = task_entry(
            task_name="tasks.s3.read_range",
            task_id="t-1",
            args=["s3://b/k", 0],
            kwargs={"end": 1024},
            exc=_boom(),
            source="s3://b/k",
            retries=5,
            import_id="imp-1",
        )
        assert entry.id == entry_id_for("task", "t-1")
        assert entry.payload == {
            "task": "tasks.s3.read_range",
            "taskId": "t-1",
            "args": ["s3://b/k", 0],
            "kwargs": {"end": 1024},
            "retries": 5,
        }
        assert entry.error is not None
        assert (entry.error.type, entry.error.message) == (
            "builtins.ValueError",
            "sink unreachable",
        )
        assert "raise ValueError" in (entry.error.traceback or "")
        assert entry.reason == "builtins.ValueError: sink unreachable"

    def test_event_entry_is_sourced_by_webhook(self) -> None:
        entry = event_entry(
            source_name="acme",
            event={"id": "e1"},
            event_key="k1",
            exc=_boom(),
            extra={"purpose": "case-4711"},
        )
        assert (entry.kind, entry.source) == ("event", "webhook:acme")
        assert entry.payload == {
            "source": "acme",
            "eventKey": "k1",
            "event": {"id": "e1"},
            "purpose": "case-4711",
        }

    def test_failure_detail_from_a_dict(self) -> None:
        detail = FailureDetail.model_validate({"type": "IOError", "message": "m"})
        assert detail.traceback is None
