"""The web app's request ids, structured log lines, task log context and Sentry scrubbing."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk
from celery import Celery
from flask import Flask
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from ingest.config import build_settings
from ingest.masking import MASK
from ingest.observability import error_reporting
from ingest.observability.logs import configure_logging
from tasks.task_context import task_log_fields
from webapp import create_app

SECRET_HEADERS = {
    "webhook-signature": "v1,c2lnbmF0dXJlLXRoYXQtbXVzdC1ub3QtbGVhaw==",
    "X-Hub-Signature-256": "sha256=" + "ab" * 32,
    "Authorization": "Bearer admin-token-that-must-not-leak",
    "Idempotency-Key": "key-1",
    "X-Api-Key": "api-key-that-must-not-leak",
}


@pytest.fixture()
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("INFO", json_output=True, stream=stream)
    yield stream
    configure_logging("INFO", json_output=True)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.fixture()
def app() -> Flask:
    application = create_app(build_settings({"redisUrl": "redis://127.0.0.1:1/0"}))

    @application.get("/test/log")
    def logs_something() -> str:
        logging.getLogger("tests.inside").warning("working", extra={"import_id": "imp-42"})
        return "ok"

    return application


class TestRequestIds:
    def test_a_given_request_id_is_echoed_and_on_every_line(
        self, app: Flask, log_stream: io.StringIO
    ) -> None:
        answer = app.test_client().get("/test/log", headers={"X-Request-ID": "req-abc.1"})
        assert answer.headers["X-Request-ID"] == "req-abc.1"
        found = lines(log_stream)
        inside = next(line for line in found if line["logger"] == "tests.inside")
        assert inside["request_id"] == "req-abc.1" and inside["import_id"] == "imp-42"
        assert inside["message"] == "working" and inside["level"] == "warning"
        access = next(line for line in found if line["logger"] == "ingest.access")
        assert access["request_id"] == "req-abc.1" and access["status"] == 200

    def test_a_missing_or_unusable_id_is_replaced(self, app: Flask) -> None:
        client = app.test_client()
        fresh = client.get("/healthz").headers["X-Request-ID"]
        unusable = client.get("/healthz", headers={"X-Request-ID": "bad id;" * 30})
        assert len(fresh) == 32 and len(unusable.headers["X-Request-ID"]) == 32

    def test_error_answers_carry_the_id_too(self, app: Flask) -> None:
        answer = app.test_client().post("/v1/webhooks/nope", headers={"X-Request-ID": "r-404"})
        assert answer.status_code == 404 and answer.headers["X-Request-ID"] == "r-404"

    def test_console_format_when_json_is_off(self) -> None:
        stream = io.StringIO()
        configure_logging("INFO", json_output=False, stream=stream)
        try:
            logging.getLogger("tests.console").info("plain text", extra={"source": "acme"})
        finally:
            configure_logging("INFO", json_output=True)
        text = stream.getvalue()
        assert "plain text" in text and "source=acme" in text and not text.startswith("{")


class TestTaskContext:
    def test_ids_come_from_parameters_and_payloads(self) -> None:
        from tasks import s3, webhooks

        spec = {"importId": "imp-1", "rangeId": "r"}
        assert task_log_fields(s3.process_range, [spec], {}) == {"import_id": "imp-1"}
        assert task_log_fields(s3.close_chunk, [[], "imp-2", 0], {}) == {"import_id": "imp-2"}
        batch = {"batchId": "b1", "source": "acme", "events": []}
        assert task_log_fields(webhooks.store_batch, [batch], {}) == {
            "source": "acme",
            "batch_id": "b1",
        }

    def test_a_task_run_logs_its_ids(self, log_stream: io.StringIO) -> None:
        celery = Celery("test-log-context", set_as_current=False)

        @celery.task(name="ingest.test.log_context", bind=True)
        def logs(self: Any, import_id: str) -> None:
            logging.getLogger("tests.task").info("in task")

        logs.apply(args=["imp-7"], task_id="task-7")
        line = next(x for x in lines(log_stream) if x["logger"] == "tests.task")
        assert line["task_id"] == "task-7" and line["task_name"] == "ingest.test.log_context"
        assert line["import_id"] == "imp-7"


class CapturingTransport(Transport):
    """Keeps envelopes instead of sending them."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)


@pytest.fixture()
def transport(monkeypatch: pytest.MonkeyPatch) -> Iterator[CapturingTransport]:
    capturing, real_init = CapturingTransport(), sentry_sdk.init
    monkeypatch.setattr(
        sentry_sdk, "init", lambda **kw: real_init(**{**kw, "transport": capturing})
    )
    yield capturing
    sentry_sdk.get_client().close()
    real_init()  # an inactive client: no DSN


class TestSentry:
    def test_off_without_a_dsn(self) -> None:
        assert not error_reporting.init_error_reporting(None, [])

    def test_an_error_reaches_sentry_without_secrets(self, transport: CapturingTransport) -> None:
        settings = build_settings(
            {
                "redisUrl": "redis://127.0.0.1:1/0",
                "observability": {"sentryDsn": "https://k@sentry.invalid/1"},
            }
        )
        app = create_app(settings)

        @app.post("/test/boom")
        def boom() -> str:
            raise RuntimeError("broke while holding whsec_c2VjcmV0LXRoYXQtbXVzdC1ub3QtbGVhaw")

        answer = app.test_client().post("/test/boom", headers=SECRET_HEADERS, data=b'{"pii":1}')
        assert answer.status_code == 500 and answer.get_json()["requestId"]
        events = [e.get_event() for e in transport.envelopes if e.get_event() is not None]
        assert events, "no event reached the transport"
        event = events[-1]
        assert event is not None
        headers = {k.lower(): v for k, v in event["request"]["headers"].items()}
        for name in SECRET_HEADERS:
            assert headers.get(name.lower()) in (MASK, "[Filtered]", "", None), name
        text = json.dumps(event)
        assert "must-not-leak" not in text and "c2VjcmV0" not in text and '"pii"' not in text

    def test_scrub_event_masks_keys_text_and_urls(self) -> None:
        event = {
            "extra": {"secrets": ["whsec_x"], "note": "Authorization: Bearer abc.def"},
            "breadcrumbs": {"values": [{"message": "GET /x?token=t0p&y=1"}]},
            "contexts": {"redis": {"url": "redis://user:pw@host:6379/0"}},
        }
        scrubbed = error_reporting.scrub_event(event)
        assert scrubbed["extra"]["secrets"] == MASK
        assert scrubbed["extra"]["note"] == f"Authorization: Bearer {MASK}"
        assert scrubbed["breadcrumbs"]["values"][0]["message"] == f"GET /x?token={MASK}&y=1"
        assert scrubbed["contexts"]["redis"]["url"] == f"redis://user:{MASK}@host:6379/0"
