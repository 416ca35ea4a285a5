"""The webhook endpoints against a real Redis: every status code of the contract, and batches."""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from standardwebhooks import Webhook

from ingest.config import Settings, build_settings
from ingest.hashing import canonical_json, sha256_hex
from ingest.provenance.verify import records_at, verify_records
from ingest.sinks import FileSink
from ingest.webhooks.drain import StreamDrainer, StreamEntry, payloads_of
from ingest.webhooks.idempotency import IdempotencyStore
from ingest.webhooks.storage import store_event_batch
from ingest.webhooks.stream import stream_key
from tests.support.services import free_port
from webapp import create_app

pytestmark = pytest.mark.integration

STD_SECRET = "whsec_" + base64.b64encode(b"integration-test-secret-32-bytes").decode()
GH_SECRET = "gh-secret"
HIGH_WATER_MARK = 3


def config(redis_url: str, **overrides: Any) -> Settings:
    http = {
        "bufferSize": 50,
        "batchInterval": 2,
        "maxBodyBytes": 4096,
        "maxBatchEvents": 5,
        "maxJsonDepth": 8,
        "sources": {
            "acme": {
                "signature": {"scheme": "standard-webhooks", "secrets": [STD_SECRET]},
                "purpose": "case-4711",
                "classification": "internal",
            },
            "gh": {
                "signature": {"scheme": "hmac-sha256", "secrets": [GH_SECRET]},
                "purpose": "repo-events",
                "idField": "delivery",
            },
            "open": {"signature": {"scheme": "none"}, "purpose": "p", "observedAtField": "at"},
            "tiny": {
                "signature": {"scheme": "none"},
                "purpose": "p",
                "rateLimit": {"maxPerSecond": 0.5, "burstSize": 3},
            },
        },
    }
    return build_settings({"redisUrl": redis_url, "http": {**http, **overrides}})


@pytest.fixture()
def app(redis_url: str, redis_client: redis.Redis) -> Iterator[Flask]:
    application = create_app(config(redis_url))
    yield application


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def _ndjson(body: bytes, msg_id: str | None = None) -> dict[str, str]:
    return {**std_headers(body, msg_id), "Content-Type": "application/x-ndjson"}


def std_headers(body: bytes, msg_id: str | None = None, at: float | None = None) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    signature = Webhook(STD_SECRET).sign(msg_id, moment, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }


def gh_headers(body: bytes) -> dict[str, str]:
    digest = hmac.new(GH_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "Content-Type": "application/json"}


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def published(client: redis.Redis, source: str | None = None) -> list[dict[str, Any]]:
    """The batch payloads a drain would store now, from the sources' streams, oldest first."""
    keys = sorted(k.decode() for k in client.scan_iter(match="ingest:wh:{*}:events"))
    names = [source] if source else [k[k.index("{") + 1 : k.rindex("}")] for k in keys]
    batches = []
    for name in names:
        entries = [
            StreamEntry(i.decode(), {k.decode(): v.decode() for k, v in f.items()})
            for i, f in client.xrange(stream_key(name))
        ]
        batches += payloads_of(name, entries) if entries else []
    return batches


def events_of(client: redis.Redis) -> list[dict[str, Any]]:
    return [entry for batch in published(client) for entry in batch["events"]]


class TestAccepted:
    def test_signed_event_is_published_then_answered_202(
        self, client: FlaskClient, redis_client: redis.Redis
    ) -> None:
        body = dumps({"kind": "alert", "n": 1})
        answer = client.post("/v1/webhooks/acme", data=body, headers=std_headers(body, "msg_1"))
        assert answer.status_code == 202
        digest = sha256_hex(canonical_json({"kind": "alert", "n": 1}))
        assert answer.json == {"status": "accepted", "eventId": "msg_1", "contentHash": digest}
        assert "RateLimit" in answer.headers and "RateLimit-Policy" in answer.headers
        [batch] = published(redis_client)
        assert batch["source"] == "acme" and batch["purpose"] == "case-4711"
        assert batch["sourceUri"].endswith("/v1/webhooks/acme")
        [entry] = batch["events"]
        assert json.loads(entry["eventJson"]) == {"kind": "alert", "n": 1}
        assert entry["eventId"] == "msg_1" and entry["contentHash"] == digest
        assert entry["observedAt"].endswith("Z")

    def test_gzip_body_is_verified_after_decompression(
        self, client: FlaskClient, redis_client: redis.Redis
    ) -> None:
        body = dumps({"delivery": "d-1", "action": "opened"})
        headers = {**gh_headers(body), "Content-Encoding": "gzip"}
        answer = client.post("/v1/webhooks/gh", data=gzip.compress(body), headers=headers)
        assert answer.status_code == 202
        assert answer.json["eventId"] == "d-1"  # the source's idField

    def test_idempotency_key_header_comes_first(self, client: FlaskClient) -> None:
        headers = {"Idempotency-Key": "client-key-7"}
        answer = client.post("/v1/webhooks/open", json={"delivery": "x"}, headers=headers)
        assert answer.json["eventId"] == "client-key-7"

    def test_without_any_key_the_event_is_keyed_by_its_canonical_hash(
        self, client: FlaskClient, redis_client: redis.Redis
    ) -> None:
        event = {"b": 2, "a": "é", "at": "2024-05-01T12:00:00Z"}
        answer = client.post(
            "/v1/webhooks/open",
            data=json.dumps(event, indent=2).encode(),
            headers={"Content-Type": "application/cloudevents+json; charset=utf-8"},
        )
        assert answer.status_code == 202
        assert answer.json["eventId"] == answer.json["contentHash"]
        assert answer.json["contentHash"] == sha256_hex(canonical_json(event))
        assert events_of(redis_client)[0]["observedAt"] == "2024-05-01T12:00:00Z"

    def test_concurrent_requests_are_each_appended_once(
        self, app: Flask, redis_client: redis.Redis
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        def send(n: int) -> int:
            return app.test_client().post("/v1/webhooks/open", json={"n": n}).status_code

        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(send, range(64)))
        assert codes == [202] * 64
        events = events_of(redis_client)
        assert sorted(json.loads(e["eventJson"])["n"] for e in events) == list(range(64))


class TestIdempotency:
    def test_retry_of_an_accepted_event_is_200_duplicate(self, client: FlaskClient) -> None:
        body = dumps({"n": 1})
        headers = std_headers(body, "msg_dup")
        first = client.post("/v1/webhooks/acme", data=body, headers=headers)
        again = client.post("/v1/webhooks/acme", data=body, headers=headers)
        assert again.status_code == 200
        assert again.json == {**first.json, "status": "duplicate"}

    def test_key_still_in_flight_is_409(self, client: FlaskClient, redis_client: Any) -> None:
        store = IdempotencyStore(redis_client, ttl_seconds=60)
        body = dumps({"n": 1})
        store.begin("acme", "msg_busy", sha256_hex(canonical_json({"n": 1})))
        answer = client.post("/v1/webhooks/acme", data=body, headers=std_headers(body, "msg_busy"))
        assert answer.status_code == 409
        assert answer.headers["Retry-After"] and answer.json["error"]

    def test_key_reused_with_another_body_is_422(self, client: FlaskClient) -> None:
        for n, expected in ((1, 202), (2, 422)):
            body = dumps({"n": n})
            answer = client.post("/v1/webhooks/acme", data=body, headers=std_headers(body, "k"))
            assert answer.status_code == expected
        assert "different body" in answer.json["error"]


class TestRefused:
    @pytest.mark.parametrize(
        "body,reason",
        [
            (b"{not json", "not valid JSON"),
            (b'{"a":' * 9 + b"1" + b"}" * 9, "deeper than 8"),
            (b"[1, 2]", "must be a JSON object"),
            (b'{"x": NaN}', "not valid JSON"),
            (b'{"x": 1e400}', "out of range"),
            (b"\xff\xfe{}", "not valid JSON"),
        ],
    )
    def test_bad_json_is_400(self, client: FlaskClient, body: bytes, reason: str) -> None:
        answer = client.post("/v1/webhooks/open", data=body, content_type="application/json")
        assert answer.status_code == 400
        assert reason in answer.json["error"]

    @pytest.mark.parametrize("fault", ["missing", "wrong", "stale", "future"])
    def test_bad_standard_signature_is_401_without_detail(
        self, client: FlaskClient, fault: str
    ) -> None:
        body = dumps({"n": 1})
        at = {"stale": time.time() - 301, "future": time.time() + 301}.get(fault)
        headers = std_headers(body, at=at)
        if fault == "missing":
            del headers["webhook-signature"]
        if fault == "wrong":
            headers = std_headers(dumps({"n": 2}), headers["webhook-id"])
        answer = client.post("/v1/webhooks/acme", data=body, headers=headers)
        assert (answer.status_code, answer.json) == (
            401,
            {"error": "signature verification failed"},
        )

    @pytest.mark.parametrize("signature", [None, "sha256=" + "0" * 64, "deadbeef"])
    def test_bad_hmac_signature_is_401(self, client: FlaskClient, signature: str | None) -> None:
        headers = {"Content-Type": "application/json"}
        if signature:
            headers["X-Hub-Signature-256"] = signature
        answer = client.post("/v1/webhooks/gh", data=b"{}", headers=headers)
        assert (answer.status_code, answer.json) == (
            401,
            {"error": "signature verification failed"},
        )

    def test_unknown_source_is_404(self, client: FlaskClient) -> None:
        answer = client.post("/v1/webhooks/nobody", json={})
        assert answer.status_code == 404 and "nobody" in answer.json["error"]

    def test_body_over_the_limit_is_413(self, client: FlaskClient) -> None:
        answer = client.post("/v1/webhooks/open", json={"x": "a" * 5000})
        assert answer.status_code == 413 and "4096" in answer.json["error"]

    def test_gzip_bomb_is_413_without_inflating_it(self, client: FlaskClient) -> None:
        bomb = gzip.compress(b"{" + b" " * 3_000_000 + b"}", 9)  # about 1,000:1
        assert len(bomb) < 4096
        answer = client.post(
            "/v1/webhooks/open",
            data=bomb,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
        assert answer.status_code == 413 and "decompressed" in answer.json["error"]

    @pytest.mark.parametrize(
        "headers",
        [
            {"Content-Type": "text/plain"},
            {"Content-Type": "application/x-ndjson"},  # only the batch endpoint takes NDJSON
            {"Content-Type": "application/json; charset=latin-1"},
            {"Content-Type": "application/json", "Content-Encoding": "br"},
        ],
    )
    def test_unsupported_media_is_415(self, client: FlaskClient, headers: dict[str, str]) -> None:
        answer = client.post("/v1/webhooks/open", data=b"{}", headers=headers)
        assert answer.status_code == 415 and answer.json["error"]

    def test_rate_limit_is_429_with_headers(self, client: FlaskClient) -> None:
        codes = [client.post("/v1/webhooks/tiny", json={"n": n}) for n in range(4)]
        assert [a.status_code for a in codes] == [202, 202, 202, 429]
        limited = codes[-1]
        assert int(limited.headers["Retry-After"]) >= 1
        assert '"webhooks:source:tiny";q=3' in limited.headers["RateLimit-Policy"]
        assert '"webhooks:source:tiny";r=0' in limited.headers["RateLimit"]

    def test_batch_larger_than_the_burst_is_413_not_429(self, client: FlaskClient) -> None:
        answer = client.post("/v1/webhooks/tiny/batch", json=[{"n": n} for n in range(4)])
        assert answer.status_code == 413 and "split" in answer.json["error"]


class TestUnavailable:
    def test_backpressure_503_then_recovery(
        self, redis_url: str, redis_client: redis.Redis
    ) -> None:
        backpressure = {"highWaterMark": HIGH_WATER_MARK, "retryAfterSeconds": 7}
        app = create_app(config(redis_url, backpressure=backpressure))
        client = app.test_client()
        codes = [client.post("/v1/webhooks/open", json={"n": n}).status_code for n in range(4)]
        assert codes == [202] * HIGH_WATER_MARK + [503]  # nobody drains the stream here
        answer = client.post("/v1/webhooks/open", json={"n": 9}, headers={"Idempotency-Key": "b"})
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "7" and "waiting" in answer.json["error"]
        batch = client.post("/v1/webhooks/open/batch", json=[{"n": 10}])
        assert batch.status_code == 503 and batch.headers["Retry-After"] == "7"
        # Refused requests left nothing behind: their keys are free, their events not kept.
        assert redis_client.xlen(stream_key("open")) == HIGH_WATER_MARK
        first = redis_client.xrange(stream_key("open"), count=1)[0][0]
        drainer = StreamDrainer(redis_client, "test", 10, 60, 3)
        drainer.ack("open", [first.decode()])  # one event stored by a drain
        retry = client.post("/v1/webhooks/open", json={"n": 9}, headers={"Idempotency-Key": "b"})
        assert retry.status_code == 202

    def test_redis_down_is_503_with_retry_after(self) -> None:
        app = create_app(config(f"redis://127.0.0.1:{free_port()}/0"))
        for path in ("/v1/webhooks/open", "/v1/webhooks/open/batch"):
            answer = app.test_client().post(path, json={"n": 1} if "batch" not in path else [{}])
            assert answer.status_code == 503 and "Redis" in answer.json["error"]
            assert answer.headers["Retry-After"]


class TestBatch:
    def test_ndjson_gives_one_result_per_event_in_order(
        self, client: FlaskClient, redis_client: redis.Redis
    ) -> None:
        lines = [{"delivery": "a", "n": 1}, {"delivery": "b"}, {"delivery": "a", "n": 1}]
        lines.append({"delivery": "a", "n": 2})
        body = b"\n".join(dumps(line) for line in lines) + b"\n"
        headers = {**gh_headers(body), "Content-Type": "application/x-ndjson"}
        answer = client.post("/v1/webhooks/gh/batch", data=body, headers=headers)
        assert answer.status_code == 202
        results = answer.json["results"]
        assert [(r["index"], r["status"], r["eventId"]) for r in results] == [
            (0, "accepted", "a"),
            (1, "accepted", "b"),
            (2, "duplicate", "a"),
            (3, "conflict", "a"),
        ]
        assert [e["eventId"] for e in events_of(redis_client)] == ["a", "b"]

    def test_json_array_and_events_seen_before(self, client: FlaskClient) -> None:
        client.post("/v1/webhooks/open", json={"n": 1})
        answer = client.post("/v1/webhooks/open/batch", json=[{"n": 1}, {"n": 2}])
        assert [r["status"] for r in answer.json["results"]] == ["duplicate", "accepted"]

    def test_retried_batch_is_a_duplicate_as_a_whole(self, client: FlaskClient) -> None:
        body = b'{"n": 1}\n{"n": 2}'
        headers = {**std_headers(body, "batch-1"), "Content-Type": "application/x-ndjson"}
        first = client.post("/v1/webhooks/acme/batch", data=body, headers=headers)
        again = client.post("/v1/webhooks/acme/batch", data=body, headers=headers)
        assert (first.status_code, again.status_code) == (202, 200)
        assert again.json == {"status": "duplicate", "results": first.json["results"]}

    def test_retried_batch_answers_each_event_as_the_first_time(
        self, client: FlaskClient, redis_client: redis.Redis
    ) -> None:
        client.post("/v1/webhooks/acme/batch", data=b'{"n": 0}', headers=_ndjson(b'{"n": 0}'))
        body = b'{"n": 0}\n{"id": "x\\"\\u00e9", "n": 1}\n{"n": 0}\n{"n": 2}'
        headers = _ndjson(body, "batch-2")
        first = client.post("/v1/webhooks/acme/batch", data=body, headers=headers)
        again = client.post("/v1/webhooks/acme/batch", data=body, headers=headers)
        statuses = [r["status"] for r in first.json["results"]]
        assert statuses == ["duplicate", "accepted", "duplicate", "accepted"]
        assert again.status_code == 200
        assert again.json == {"status": "duplicate", "results": first.json["results"]}
        # The request key remembers a status letter per event, not the results themselves.
        store = IdempotencyStore(redis_client, ttl_seconds=60)
        remembered = redis_client.get(store.redis_key("acme", "batch:batch-2"))
        assert remembered is not None and len(remembered) < 40

    def test_gzipped_ndjson(self, client: FlaskClient) -> None:
        answer = client.post(
            "/v1/webhooks/open/batch",
            data=gzip.compress(b'{"n": 1}\n\n{"n": 2}\n'),
            headers={"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"},
        )
        assert answer.status_code == 202 and len(answer.json["results"]) == 2

    @pytest.mark.parametrize(
        "body,reason",
        [
            (b'{"n": 1}\n[2]', "line 2 must be a JSON object"),
            (b'{"n": 1}\n{"n":', "line 2 is not valid JSON"),
            (b"\n".join([b"{}"] * 6), "more than the limit of 5"),
            (b"\n", "no events"),
        ],
    )
    def test_bad_batch_is_400(self, client: FlaskClient, body: bytes, reason: str) -> None:
        answer = client.post(
            "/v1/webhooks/open/batch", data=body, content_type="application/x-ndjson"
        )
        assert answer.status_code == 400 and reason in answer.json["error"]

    def test_json_object_is_not_a_batch(self, client: FlaskClient) -> None:
        answer = client.post("/v1/webhooks/open/batch", json={"n": 1})
        assert answer.status_code == 400 and "array" in answer.json["error"]


def test_published_batch_stores_each_event_once_with_provenance(
    client: FlaskClient, redis_client: redis.Redis, tmp_path: Path
) -> None:
    from ingest.dedup import DedupIndex

    client.post(
        "/v1/webhooks/open/batch", json=[{"n": 1}, {"n": 2}, {"__type__": "x", "__value__": 1}]
    )
    client.post("/v1/webhooks/open", json={"n": 2}, headers={"Idempotency-Key": "same-content"})
    sink = FileSink(f"file://{tmp_path}")
    dedup = DedupIndex(redis_client, ttl_seconds=3600)
    outcomes = [store_event_batch(b, sink, dedup, "fallback") for b in published(redis_client)]
    outcomes += [store_event_batch(b, sink, dedup, "fallback") for b in published(redis_client)]
    assert sum(o.stored for o in outcomes) == 3  # {"n": 2} twice by content: stored once
    assert [o.already_stored for o in outcomes].count(True) >= 1
    report = verify_records(records_at(str(tmp_path)))
    assert report.ok and report.records == 3, report.details
    data = [r.record["data"] for r in records_at(str(tmp_path))]
    assert {"__type__": "x", "__value__": 1} in data
    provenance = next(iter(records_at(str(tmp_path)))).record["provenance"]
    assert provenance["sourceType"] == "HTTP" and provenance["purpose"] == "p"


def test_exhausted_batch_goes_to_the_dlq_as_one_replayable_task(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    from ingest.dlq import DeadLetterQueue
    from ingest.runtime import reset_runtime
    from tasks.webhooks import store_batch

    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the sink's directory should be")
    settings = config(redis_url)
    settings = settings.model_copy(
        update={
            "sink_uri": f"file://{blocked}",
            "celery": settings.celery.model_copy(update={"max_retries": 0}),
        }
    )
    reset_runtime(settings)
    try:
        payload = {"batchId": secrets.token_hex(8), "source": "open", "sourceUri": "http://x/"}
        payload["events"] = [{"event": {"n": 1}, "eventId": "e1", "contentHash": "0" * 64}]
        result = store_batch.apply(args=[payload]).get()
    finally:
        reset_runtime()
    assert result["deadLettered"] is True
    entry = DeadLetterQueue(redis_client).get(result["dlqEntry"])
    assert entry is not None and entry.kind == "task" and entry.source == "webhook:open"
    assert entry.payload["task"] == "ingest.webhooks.store_batch"
    assert entry.payload["args"] == [payload]


def test_seed_example_config_still_accepts_events(redis_url: str, redis_client: Any) -> None:
    from devstack import ROOT
    from ingest.config import read_config_file

    data = read_config_file(ROOT / "config" / "seed-example.json")
    data["redisUrl"] = redis_url
    data["http"]["idempotency"]["redisUrl"] = redis_url
    data["http"]["sources"] = {"open": {"signature": {"scheme": "none"}, "purpose": "p"}}
    app = create_app(build_settings(data))
    answer = app.test_client().post("/v1/webhooks/open", json={"n": 1})
    assert answer.status_code == 202
    assert len(events_of(redis_client)) == 1  # durable when answered: no batch window to wait


class TestEventSchema:
    """A source's eventSchema: events that fail it get 400 with the reason; nothing is kept."""

    def schema_client(self, redis_url: str) -> FlaskClient:
        settings = config(redis_url)
        settings.http.sources["open"].event_schema = "webhook_event"
        return create_app(settings).test_client()

    def test_valid_event_is_accepted(self, redis_url: str, redis_client: redis.Redis) -> None:
        answer = self.schema_client(redis_url).post("/v1/webhooks/open", json={"type": "ping"})
        assert answer.status_code == 202

    def test_event_failing_the_schema_is_400_with_the_reason(
        self, redis_url: str, redis_client: redis.Redis
    ) -> None:
        answer = self.schema_client(redis_url).post("/v1/webhooks/open", json={"kind": "ping"})
        assert answer.status_code == 400
        assert "webhook_event" in answer.get_json()["error"]
        assert "'type' is a required property" in answer.get_json()["error"]

    def test_formats_are_checked(self, redis_url: str, redis_client: redis.Redis) -> None:
        client = self.schema_client(redis_url)
        bad = client.post("/v1/webhooks/open", json={"type": "a", "at": "not a date"})
        assert bad.status_code == 400 and "date-time" in bad.get_json()["error"]
        good = client.post("/v1/webhooks/open", json={"type": "a", "at": "2026-11-25T10:00:00Z"})
        assert good.status_code == 202

    def test_batch_names_the_failing_event(self, redis_url: str, redis_client: redis.Redis) -> None:
        body = [{"type": "a"}, {"type": 5}]
        answer = self.schema_client(redis_url).post("/v1/webhooks/open/batch", json=body)
        assert answer.status_code == 400 and answer.get_json()["error"].startswith("event 1:")

    def test_missing_schema_stops_start_up(self, redis_url: str) -> None:
        from ingest.config import ConfigError

        settings = config(redis_url)
        settings.http.sources["open"].event_schema = "no_such_schema"
        with pytest.raises(ConfigError, match=r"eventSchema.*no_such_schema"):
            create_app(settings)
