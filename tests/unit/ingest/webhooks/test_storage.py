"""The batch endpoint's shortcuts write exactly what the general code wrote: canonical JSON,
idempotency results, event keys, and the file sink's record lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ingest.hashing import canonical_json, sha256_hex
from ingest.provenance import ProvenanceBuilder
from ingest.sinks import FileSink
from ingest.sinks.traced import traced_sink
from ingest.webhooks.idempotency import encode_result, event_key, idempotency_key
from ingest.webhooks.storage import (
    _event_of,
    _event_text,
    event_provenance,
    record_lines,
    store_event_batch,
)

EVENTS: list[Any] = [
    {"b": [1, 2], "a": "zé"},
    {"n": 12345678901234567890123, "f": 0.1, "g": 1e-05, "h": 1e16, "i": -0.0, "j": 2.5e300},
    {"text": 'quote " backslash \\ tab \t nl \n ctl \x01 del \x7f', "emoji": "🙂", "cjk": "漢字"},
    {"nested": {"z": {"y": [None, True, False, {"x": []}]}, "a": {}}, "": ""},
    {"\u2028": "\u2029", "é": 1, "e": 2, "E": 3},
    {"deep": [[[[{"k": "v"}]]]], "s": "\ud7ff\ue000"},
]


@pytest.mark.parametrize("event", EVENTS)
def test_canonical_json_is_json_dumps_with_the_canonical_options(event: Any) -> None:
    expected = json.dumps(
        event, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
    assert canonical_json(event) == expected


def test_canonical_json_still_refuses_what_it_refused() -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})
    with pytest.raises(UnicodeEncodeError):
        canonical_json({"x": "\ud800"})


@pytest.mark.parametrize(
    "result",
    [
        {"eventId": "msg_1", "contentHash": "a" * 64},
        {"eventId": 'zé "q" \\ \n \x00 🙂 \u2028', "contentHash": "b" * 64},
        {},
        {"eventId": 7, "contentHash": "c" * 64},  # not all strings: the encoder's way
        {"results": [{"index": 0, "status": "accepted"}], "x": None},
    ],
)
def test_encode_result_is_the_json_text_of_before(result: dict[str, Any]) -> None:
    assert encode_result(result) == json.dumps(result, separators=(",", ":"), default=str)


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"id": "e1"}, "id"),
        ({"id": 42}, "id"),
        ({"id": True}, "id"),
        ({"id": " "}, "id"),
        ({"a": {"b": "deep"}}, "a.b"),
        ({"a.b": "literal", "a": {"b": "deep"}}, "a.b"),
        ({"id": "e1"}, None),
        ({"other": 1}, "id"),
    ],
)
def test_event_key_is_idempotency_key_without_headers(event: Any, field: str | None) -> None:
    digest = sha256_hex(canonical_json(event))
    assert event_key(event, field, digest) == idempotency_key({}, event, field, digest)


def _builder(classification: str | None = "internal") -> ProvenanceBuilder:
    return ProvenanceBuilder(
        source_id="acme",
        source_type="HTTP",
        source_uri="http://127.0.0.1:8000/v1/webhooks/acme/batch",
        purpose="case-4711 é",
        classification=classification,
        ingested_by="acme",
        batch_id="b1",
    )


def _entries() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for index, event in enumerate(EVENTS):
        text = canonical_json(event).decode()
        entries.append(
            {
                "eventJson": text,
                "eventId": f"id-{index}-é" if index % 3 else None,
                "contentHash": sha256_hex(text.encode()),
                "receivedAt": "2026-01-02T03:04:05.678Z" if index % 2 else None,
                "receivedAtEpoch": 1767322000.5,
                "observedAt": None if index % 2 else "2026-01-02T03:04:05Z",
            }
        )
    loose = json.dumps(EVENTS[0], indent=2)  # not canonical: decoded and encoded again
    entries.append({"eventJson": loose, "contentHash": "0" * 64, "eventId": "loose"})
    entries.append({"event": {"b": 1, "a": [1.5, "ü"]}, "eventId": "object", "observedAt": 5})
    return entries


def _dumps_lines(builder: ProvenanceBuilder, entries: list[dict[str, Any]]) -> bytes:
    """What the file sink's write_records writes for these entries (the reference)."""
    out = b""
    for entry in entries:
        event, content_hash = _event_of(entry)
        record = {
            "data": event,
            "provenance": event_provenance(builder, content_hash, entry),
        }
        out += json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
    return out


@pytest.mark.parametrize("classification", ["internal", None])
def test_record_lines_are_the_bytes_write_records_wrote(classification: str | None) -> None:
    builder, entries = _builder(classification), _entries()
    items = [(*_event_text(entry), entry) for entry in entries]
    assert record_lines(builder, items) == _dumps_lines(builder, entries)


def test_event_text_hashes_as_event_of() -> None:
    for entry in _entries():
        text, digest = _event_text(entry)
        event, expected = _event_of(entry)
        assert digest == expected
        assert json.loads(text) == event


class _RecordsOnly:
    """A sink without write_json_lines: it gets row-shaped records, as before."""

    def __init__(self, inner: FileSink) -> None:
        self.inner, self.uri = inner, inner.uri

    def exists(self, name: str) -> bool:
        return self.inner.exists(name)

    def write_records(self, name: str, records: Any) -> Any:
        return self.inner.write_records(name, records)


def test_a_batch_is_stored_the_same_either_way(tmp_path: Path) -> None:
    payload = {
        "batchId": "b1",
        "source": "acme",
        "sourceUri": "http://127.0.0.1:8000/v1/webhooks/acme/batch",
        "purpose": "case-4711",
        "classification": "internal",
        "events": _entries(),
    }
    fast = traced_sink(FileSink(f"file://{tmp_path / 'fast'}"))
    slow = _RecordsOnly(FileSink(f"file://{tmp_path / 'slow'}"))
    stored = store_event_batch(payload, fast, None, "webhook")
    assert stored == store_event_batch(payload, slow, None, "webhook")  # type: ignore[arg-type]
    assert stored.stored == len(payload["events"])
    fast_file = tmp_path / "fast" / "webhooks" / "acme" / "b1.jsonl"
    slow_file = tmp_path / "slow" / "webhooks" / "acme" / "b1.jsonl"
    fast_lines = fast_file.read_bytes().splitlines()
    slow_lines = slow_file.read_bytes().splitlines()
    # storedAt is the builder's clock (and ingestedAt where no receipt time was sent).
    for fast_line, slow_line in zip(fast_lines, slow_lines, strict=True):
        a, b = json.loads(fast_line), json.loads(slow_line)
        for provenance in (a["provenance"], b["provenance"]):
            assert provenance.pop("storedAt")
            if "receivedAt" in provenance:
                assert provenance["ingestedAt"] == provenance["receivedAt"]
            else:
                provenance.pop("ingestedAt")
        assert a == b
    assert store_event_batch(payload, fast, None, "webhook").already_stored


def test_a_plainly_utf8_body_has_only_utf8_lines() -> None:
    import random

    from ingest.webhooks.bodies import _plainly_utf8

    rng = random.Random(7)
    pieces = [b"\x00", b"\xef", b"\xbb", b"\xbf", b"\xfe", b"\xff", b"{", b"a", b"\xc3\xa9", b"\n"]
    for _ in range(20000):
        line = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        if _plainly_utf8(line):
            assert json.detect_encoding(line) == "utf-8", line


@pytest.mark.parametrize(
    "body",
    [
        '{"a":"zé"}\n{"b":[1,2.5]}\n'.encode(),
        b'\xef\xbb\xbf{"bom":1}\n{"b":2}',
        '{"a":1}\n'.encode("utf-16"),
        b'{"a":"\\ud800"}\n',
        b'{"a":1}\n{"a":\n',
        b'{"a":"\xc3"}\n',
    ],
)
def test_ndjson_batches_parse_as_one_line_at_a_time(body: bytes) -> None:
    from ingest.webhooks.bodies import BodyError, _as_event, _loads, parse_batch

    def reference() -> Any:
        lines = [line for line in body.split(b"\n") if line.strip()]
        return [
            _as_event(_loads(line, 32, f"line {n}"), f"line {n}") for n, line in enumerate(lines, 1)
        ]

    try:
        expected: Any = reference()
    except BodyError as exc:
        expected = (type(exc), exc.message)
    try:
        got: Any = parse_batch(body, "ndjson", 32, 1000)
    except BodyError as exc:
        got = (type(exc), exc.message)
    assert got == expected


def test_batch_results_are_the_json_flask_would_write() -> None:
    from flask import Flask, jsonify

    from webapp.webhook_batch import results_json

    keys = ["plain", 'quote " and \\ back', "zé 🙂 \u2028", "\ud800", ""]
    hashes = [sha256_hex(k.encode("utf-8", "surrogatepass")) for k in keys]
    statuses = ["accepted", "duplicate", "conflict", "in_flight", "accepted"]
    results = [
        {"index": i, "status": s, "eventId": k, "contentHash": h}
        for i, (k, h, s) in enumerate(zip(keys, hashes, statuses, strict=True))
    ]
    with Flask(__name__).app_context():
        expected = jsonify(results).get_data(as_text=True)
    assert results_json(keys, hashes, statuses) + "\n" == expected
    assert json.loads(results_json(keys, hashes, statuses)) == results


def test_plain_ndjson_parses_as_the_careful_path_does() -> None:
    from ingest.webhooks.bodies import _as_event, parse_batch

    lines = [json.dumps(event, ensure_ascii=ascii) for event in EVENTS for ascii in (True, False)]
    lines += [" \t" + json.dumps(EVENTS[0]) + " \r"]
    body = "\n".join(lines).encode("utf-8", "surrogatepass")
    careful = [_as_event(json.loads(line), "line") for line in lines]
    assert parse_batch(body, "ndjson", 32, 1000) == careful


@pytest.mark.parametrize(
    "line,reason",
    [
        ('{"n": NaN}', "line 2 is not valid JSON"),
        ('{"n": 1} {"m": 2}', "line 2 is not valid JSON"),
        ("[1]", "line 2 must be a JSON object"),
        ('{"n": 1e400}', "line 2 holds a string that is not valid Unicode or a number"),
        ('{"s": "\\ud800"}', "line 2 holds a string that is not valid Unicode"),
        ("[" * 40 + "]" * 40, "line 2 is nested deeper than 32 levels"),
    ],
)
def test_a_line_the_plain_path_refuses_is_reported_by_number(line: str, reason: str) -> None:
    from ingest.webhooks.bodies import MalformedBody, parse_batch

    with pytest.raises(MalformedBody, match=reason):
        parse_batch(b'{"ok": 1}\n' + line.encode(), "ndjson", 32, 1000)


class _FailingOnce(_RecordsOnly):
    """A sink whose first write fails, as an S3 sink whose bucket is missing."""

    failed = False

    def write_records(self, name: str, records: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise OSError("the sink is down")
        return super().write_records(name, records)


def test_a_failed_batch_leaves_its_events_to_a_differently_grouped_retry(
    tmp_path: Path, redis_client: Any
) -> None:
    from ingest.dedup import DedupIndex

    dedup = DedupIndex(redis_client, ttl_seconds=3600, partitions=4)
    entries = [e for e in _entries() if e.get("contentHash") and e["contentHash"] != "0" * 64]
    sink = _FailingOnce(FileSink(f"file://{tmp_path}"))
    first = {"batchId": "b-first", "source": "acme", "sourceUri": "u", "events": entries[:2]}
    with pytest.raises(OSError):
        store_event_batch(first, sink, dedup, "webhook")  # type: ignore[arg-type]
    # Read again with the next entries: another batch id, and every event still stored.
    again = {"batchId": "b-again", "source": "acme", "sourceUri": "u", "events": entries}
    stored = store_event_batch(again, sink, dedup, "webhook")  # type: ignore[arg-type]
    assert (stored.stored, stored.duplicates) == (len(entries), 0)
    # A duplicate is still one: the content was stored, under b-again.
    later = {"batchId": "b-later", "source": "acme", "sourceUri": "u", "events": entries[:1]}
    assert store_event_batch(later, sink, dedup, "webhook").duplicates == 1  # type: ignore[arg-type]
