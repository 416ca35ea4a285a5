"""Traces across the web app, the broker and a worker: an in-process Celery worker on the real
Redis shares an in-memory exporter with the Flask test client, so parent links can be checked."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery._state import _set_task_join_will_block
from celery.contrib.testing.worker import start_worker
from flask import Flask
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY

from ingest.config import Settings, build_settings
from ingest.observability.logs import configure_logging
from ingest.observability.tracing import (
    SINK_WRITE_SPAN,
    batch_span,
    capture_context,
    configure_tracing,
    span,
)
from ingest.runtime import Runtime, reset_runtime
from tasks.dispatch import Dispatcher
from tasks.factory import create_celery
from tasks.names import ALL_QUEUES
from tasks.observability import instrument_celery
from tests.support.golden import FIXTURES
from tests.support.services import wait_for
from webapp import create_app

pytestmark = pytest.mark.integration
AUTH = {"Authorization": "Bearer trace-token"}


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    spans = InMemorySpanExporter()
    configure_tracing("intelgraph-ingest-test", exporter=spans)
    instrument_celery()
    yield spans
    CeleryInstrumentor().uninstrument()


@pytest.fixture(scope="module")
def settings(
    redis_url: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    # A database of its own: the in-process worker's queue bindings must survive other
    # tests' FLUSHDB, and this module's keys must not disturb theirs.
    url = redis_url.rsplit("/", 1)[0] + "/3"
    redis.Redis.from_url(url).flushdb()
    sources = {"open": {"signature": {"scheme": "none"}, "purpose": "trace-test"}}
    return build_settings(
        {
            "redisUrl": url,
            "s3EndpointUrl": s3_endpoint,
            "sinkUri": f"file://{tmp_path_factory.mktemp('trace-sink')}",
            "adminToken": "trace-token",
            "http": {"sources": sources, "batchInterval": 1},
        }
    )


@pytest.fixture(scope="module")
def worker(settings: Settings, exporter: InMemorySpanExporter) -> Iterator[None]:
    reset_runtime(settings)
    celery = create_celery(settings, worker=True)
    dispatcher = Dispatcher(celery, Runtime(settings).redis, settings)  # as worker_ready starts
    thread = threading.Thread(target=dispatcher.run_forever, daemon=True)
    with start_worker(celery, perform_ping_check=False, queues=list(ALL_QUEUES)):
        # As a worker's pool sets it (start_worker clears it): nothing here waits on results,
        # so sending subscribes to none (tasks/result_backend.py).
        _set_task_join_will_block(True)
        thread.start()
        yield
        dispatcher.stop()
        thread.join(5)
        _set_task_join_will_block(False)
    reset_runtime()


@pytest.fixture()
def app(settings: Settings, exporter: InMemorySpanExporter, worker: None) -> Iterator[Flask]:
    exporter.clear()
    application = create_app(settings)
    yield application


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def parent_of(child: ReadableSpan) -> int | None:
    return child.parent.span_id if child.parent is not None else None


def finished(exporter: InMemorySpanExporter, name: str, count: int = 1) -> list[ReadableSpan]:
    def enough() -> list[ReadableSpan] | None:
        spans = list(exporter.get_finished_spans())
        return spans if len(named(spans, name)) >= count else None

    return wait_for(enough, 60, 0.1, f"{count} finished {name} span(s)")  # type: ignore[no-any-return]


def test_an_import_is_one_trace_from_request_to_sink(
    app: Flask, exporter: InMemorySpanExporter, s3_client: Any, bucket: str
) -> None:
    body = (FIXTURES / "entities" / "clean.csv").read_bytes()
    s3_client.put_object(Bucket=bucket, Key="t/clean.csv", Body=body)
    answer = app.test_client().post(
        "/admin/imports",
        headers=AUTH,
        json={"uri": f"s3://{bucket}/t/", "schema": "entities", "purpose": "trace"},
    )
    assert answer.status_code == 202, answer.get_json()
    spans = finished(exporter, "run/ingest.s3.close_chunk")

    request = next(s for s in spans if s.kind is SpanKind.SERVER and "imports" in s.name)
    publish = named(spans, "apply_async/ingest.s3.scan")[0]
    scan = named(spans, "run/ingest.s3.scan")[0]
    range_run = named(spans, "run/ingest.s3.range")[0]
    range_publishes = {s.context.span_id: s for s in named(spans, "apply_async/ingest.s3.range")}
    write = named(spans, SINK_WRITE_SPAN)[0]

    assert parent_of(publish) == request.context.span_id
    assert parent_of(scan) == publish.context.span_id
    assert parent_of(range_publishes[parent_of(range_run)]) == scan.context.span_id
    assert parent_of(write) == range_run.context.span_id
    trace_ids = {s.context.trace_id for s in (request, publish, scan, range_run, write)}
    assert trace_ids == {request.context.trace_id}


def test_an_import_s_log_lines_carry_its_ids_in_every_task(
    app: Flask, exporter: InMemorySpanExporter, s3_client: Any, bucket: str
) -> None:
    s3_client.put_object(
        Bucket=bucket, Key="l/clean.csv", Body=(FIXTURES / "entities" / "clean.csv").read_bytes()
    )
    stream = io.StringIO()
    configure_logging("INFO", json_output=True, stream=stream)
    try:
        answer = app.test_client().post(
            "/admin/imports",
            headers={**AUTH, "X-Request-ID": "follow-me-1"},
            json={"uri": f"s3://{bucket}/l/", "schema": "entities", "purpose": "logs"},
        )
        import_id = answer.get_json()["importId"]
        finished(exporter, "run/ingest.s3.close_chunk")
    finally:
        configure_logging("INFO", json_output=True)
    lines = [json.loads(x) for x in stream.getvalue().splitlines() if x.startswith("{")]
    done = next(x for x in lines if x["message"] == "import finished")
    assert done["import_id"] == import_id and done["request_id"] == "follow-me-1"
    assert done["task_name"] == "ingest.s3.close_chunk" and done["trace_id"]
    ranges = [x for x in lines if x.get("task_name") == "ingest.s3.range"]
    assert ranges and all(x["import_id"] == import_id for x in ranges)


def test_a_webhook_event_is_stored_inside_a_span_of_its_request_trace(
    app: Flask, exporter: InMemorySpanExporter
) -> None:
    answer = app.test_client().post("/v1/webhooks/open", json={"kind": "trace", "n": 1})
    assert answer.status_code == 202, answer.get_json()
    spans = finished(exporter, "run/ingest.webhooks.drain")  # ends after the write inside it
    request = next(s for s in spans if s.kind is SpanKind.SERVER and "webhooks" in s.name)
    store = named(spans, "ingest.webhooks.store")[0]
    write = named(spans, SINK_WRITE_SPAN)[0]
    assert parent_of(write) == store.context.span_id
    assert store.context.trace_id == request.context.trace_id


def test_a_webhook_batch_is_measured_from_its_messages(
    app: Flask, exporter: InMemorySpanExporter
) -> None:
    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"source": "open", **labels}) or 0.0

    batches = value("ingest_webhook_batch_size_events_count")
    waits = value("ingest_webhook_pre_storage_latency_seconds_count")
    accepted = value("ingest_webhook_requests_total", status="202", reason="accepted")
    answer = app.test_client().post("/v1/webhooks/open/batch", json=[{"n": 3}, {"n": 4}, {"n": 3}])
    assert [r["status"] for r in answer.get_json()["results"]] == [
        "accepted",
        "accepted",
        "duplicate",
    ]
    assert value("ingest_webhook_requests_total", status="202", reason="accepted") == accepted + 1
    assert value("ingest_webhook_events_total", outcome="duplicate") >= 1
    wait_for(
        lambda: value("ingest_webhook_pre_storage_latency_seconds_count") == waits + 2,
        30,
        0.05,
        "the stored batch's pre-storage latencies",
    )
    assert value("ingest_webhook_batch_size_events_count") == batches + 1  # counted as stored


def test_a_webhook_request_leads_to_its_batch(app: Flask, exporter: InMemorySpanExporter) -> None:
    answer = app.test_client().post("/v1/webhooks/open", json={"kind": "trace", "n": 2})
    assert answer.status_code == 202
    spans = finished(exporter, SINK_WRITE_SPAN)
    request = next(s for s in spans if s.kind is SpanKind.SERVER and "webhooks" in s.name)
    write = named(spans, SINK_WRITE_SPAN)[0]
    assert write.context.trace_id == request.context.trace_id


def test_a_batch_span_continues_one_request_and_links_the_others(
    exporter: InMemorySpanExporter,
) -> None:
    exporter.clear()
    contexts = []
    for name in ("request-1", "request-2"):
        with span(name):
            contexts.append(capture_context())
    with batch_span("ingest.webhooks.publish", contexts, **{"ingest.events": 2}):
        pass
    spans = list(exporter.get_finished_spans())
    first, second = named(spans, "request-1")[0], named(spans, "request-2")[0]
    batch = named(spans, "ingest.webhooks.publish")[0]
    assert parent_of(batch) == first.context.span_id
    assert [link.context.span_id for link in batch.links] == [second.context.span_id]
