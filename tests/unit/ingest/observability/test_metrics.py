"""Metrics: bounded label values, what each observe function counts, queue depths, the worker
server on a busy port, and the multiprocess directory."""

from __future__ import annotations

import json
import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY, CollectorRegistry

from ingest.observability import metrics
from ingest.observability.exposition import QueueDepthCollector, start_metrics_server
from ingest.observability.metrics import Reason
from ingest.observability.metrics_dir import prepare_metrics_dir


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(autouse=True)
def known_sources() -> Iterator[None]:
    metrics.set_known_sources(["acme", "gh"])
    yield
    metrics.set_known_sources(None)


class TestLabels:
    def test_a_configured_source_keeps_its_name(self) -> None:
        assert metrics.source_label("acme") == "acme"

    def test_an_unconfigured_source_is_unknown(self) -> None:
        assert metrics.source_label("whatever-the-url-said") == "unknown"

    def test_unsafe_names_are_unknown_even_without_a_config(self) -> None:
        metrics.set_known_sources(None)
        assert metrics.source_label("a" * 65) == "unknown"
        assert metrics.source_label('x"}\n') == "unknown"
        assert metrics.source_label("partner-1") == "partner-1"

    def test_status_codes_only(self) -> None:
        assert metrics.status_label(429) == "429"
        assert metrics.status_label("abc") == "other"
        assert metrics.status_label(1000) == "other"

    def test_reason_follows_the_status_unless_named(self) -> None:
        assert metrics.reason_for_status(429) is Reason.RATE_LIMITED
        assert metrics.reason_for_status(418) is Reason.OTHER

    def test_task_names_outside_the_system_are_other(self) -> None:
        metrics.observe_task_retry("evil.task.name")
        assert value("ingest_task_retries_total", task="other") >= 1

    def test_every_metric_is_labelled(self) -> None:
        # Values of unlabelled metrics would exist at import, before a worker can switch the
        # value class to multiprocess mode (see use_multiprocess_values).
        for metric in metrics.ALL_METRICS:
            assert metric._labelnames, metric._name


class TestWebhookMetrics:
    def test_a_request_is_counted_by_source_status_and_reason(self) -> None:
        before = value(
            "ingest_webhook_requests_total", source="acme", status="503", reason="backpressure"
        )
        metrics.observe_webhook("acme", 503, Reason.BACKPRESSURE)
        after = value(
            "ingest_webhook_requests_total", source="acme", status="503", reason="backpressure"
        )
        assert after == before + 1

    def test_an_unknown_reason_becomes_other(self) -> None:
        before = value("ingest_webhook_requests_total", source="gh", status="400", reason="other")
        metrics.observe_webhook("gh", 400, "made-up-reason")
        assert (
            value("ingest_webhook_requests_total", source="gh", status="400", reason="other")
            == before + 1
        )

    def test_only_accepted_answers_feed_the_accept_latency(self) -> None:
        name = "ingest_webhook_accept_latency_seconds_count"
        before = value(name, source="gh")
        metrics.observe_webhook("gh", 202, seconds=0.004)
        metrics.observe_webhook("gh", 401, seconds=0.004)
        assert value(name, source="gh") == before + 1

    def test_events_batches_and_pre_storage_latency(self) -> None:
        before = value("ingest_webhook_events_total", source="acme", outcome="duplicate")
        metrics.observe_webhook_events("acme", "duplicate", 3)
        assert (
            value("ingest_webhook_events_total", source="acme", outcome="duplicate") == before + 3
        )
        batches = value("ingest_webhook_batch_size_events_count", source="acme")
        metrics.observe_batch("acme", 17)
        assert value("ingest_webhook_batch_size_events_count", source="acme") == batches + 1
        stored = value("ingest_webhook_pre_storage_latency_seconds_count", source="acme")
        metrics.observe_pre_storage_latency("acme", 0.02)
        assert (
            value("ingest_webhook_pre_storage_latency_seconds_count", source="acme") == stored + 1
        )


class TestWebhookBatchesFromMessages:
    payload = {
        "batchId": "b",
        "source": "gh",
        "events": [{"receivedAtEpoch": 100.0}, {"receivedAtEpoch": 100.5}],
    }

    def test_a_published_batch_message_counts_its_events(self) -> None:
        from tasks.webhook_metrics import observe_published_batch

        name = "ingest_webhook_batch_size_events_sum"
        before = value(name, source="gh")
        observe_published_batch("ingest.webhooks.store_batch", ([self.payload], {}, {}))
        observe_published_batch("ingest.s3.scan", (["imp"], {}, {}))
        assert value(name, source="gh") == before + 2

    def test_only_a_batch_stored_now_has_pre_storage_latencies(self) -> None:
        from tasks.webhook_metrics import observe_stored_batch

        name = "ingest_webhook_pre_storage_latency_seconds_count"
        before = value(name, source="gh")
        task, args = "ingest.webhooks.store_batch", [self.payload]
        observe_stored_batch(task, args, "SUCCESS", {"stored": 2}, now=100.75)
        observe_stored_batch(task, args, "SUCCESS", {"alreadyStored": True}, now=101)
        observe_stored_batch(task, args, "SUCCESS", {"deadLettered": True}, now=101)
        observe_stored_batch(task, args, "RETRY", None, now=101)
        assert value(name, source="gh") == before + 2
        under_half_a_second = value(
            "ingest_webhook_pre_storage_latency_seconds_bucket", source="gh", le="0.5"
        )
        assert under_half_a_second >= 1


class TestImportMetrics:
    def test_a_processed_range_counts_rows_and_bytes(self) -> None:
        rows = value("ingest_import_rows_total", schema="unit_schema", outcome="stored")
        metrics.observe_import_range(
            "unit_schema", bytes_read=100, stored=5, rejected=1, duplicates=2
        )
        assert value("ingest_import_rows_total", schema="unit_schema", outcome="stored") == rows + 5
        assert value("ingest_import_rows_total", schema="unit_schema", outcome="rejected") >= 1
        assert value("ingest_import_bytes_total", schema="unit_schema") >= 100

    def test_a_resumed_range_adds_no_rows(self) -> None:
        rows = value("ingest_import_rows_total", schema="resumed_schema", outcome="stored")
        metrics.observe_import_range(
            "resumed_schema", bytes_read=100, stored=5, rejected=0, duplicates=0, resumed=True
        )
        assert value("ingest_import_rows_total", schema="resumed_schema", outcome="stored") == rows
        assert value("ingest_import_ranges_total", schema="resumed_schema", outcome="resumed") >= 1


class TestQueueDepthCollector:
    def collect(self, collector: QueueDepthCollector) -> dict[str, Any]:
        registry = CollectorRegistry()
        registry.register(collector)
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for m in registry.collect()
            for s in m.samples
        }

    def test_reports_each_queue_and_the_dlq(self) -> None:
        depths = {"ingest.ranges": 6, "ingest.dlq": 1}
        samples = self.collect(QueueDepthCollector(lambda: depths, lambda: 7))
        assert samples[("ingest_queue_messages", (("queue", "ingest.ranges"),))] == 6
        assert samples[("ingest_queue_messages", (("queue", "ingest.dlq"),))] == 1
        assert samples[("ingest_dlq_entries", ())] == 7
        assert samples[("ingest_queue_stats_up", ())] == 1
        assert ("ingest_webhook_events_waiting", ()) not in samples

    def test_reads_the_webhook_backlog_when_given(self) -> None:
        collector = QueueDepthCollector(dict, lambda: 0, webhook_backlog=lambda: 3)
        assert self.collect(collector)[("ingest_webhook_events_waiting", ())] == 3

    def test_readings_are_cached(self) -> None:
        reads, now = [0], [100.0]

        def depths() -> dict[str, int]:
            reads[0] += 1
            return {"q": 1}

        collector = QueueDepthCollector(depths, lambda: 0, max_age=5, clock=lambda: now[0])
        self.collect(collector)
        self.collect(collector)
        assert reads[0] == 1
        now[0] += 6
        self.collect(collector)
        assert reads[0] == 2

    def test_a_broker_down_is_a_zero_not_a_failed_scrape(self) -> None:
        def down() -> Any:
            raise redis.ConnectionError("refused")

        samples = self.collect(QueueDepthCollector(down, lambda: 0))
        assert samples == {("ingest_queue_stats_up", ()): 0}


class TestWorkerServer:
    def test_a_busy_port_is_a_warning(self, caplog: pytest.LogCaptureFixture) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with caplog.at_level(logging.WARNING, logger="ingest.observability.exposition"):
                server = start_metrics_server(port, CollectorRegistry(), addr="127.0.0.1")
        assert server is None
        assert "WORKER_METRICS_PORT" in caplog.text

    def test_a_worker_without_its_port_leaves_the_directory_alone(self, tmp_path: Path) -> None:
        from ingest.config import build_settings
        from tasks.observability import WorkerObservability

        with socket.socket() as taken:
            taken.bind(("0.0.0.0", 0))
            taken.listen()
            port = taken.getsockname()[1]
            kept = tmp_path / f"worker-{port}" / "counter_1.db"
            kept.parent.mkdir()
            kept.write_bytes(b"another worker's")
            observability = {"metricsDir": str(tmp_path), "workerMetricsPort": port}
            worker = WorkerObservability(build_settings({"observability": observability}), "w@h")
            worker.serve_metrics()
        assert worker.server is None and worker.metrics_dir is None
        assert kept.exists()


class TestMetricsDir:
    def test_a_configured_directory_is_per_role_and_cleaned(self, tmp_path: Path) -> None:
        stale = tmp_path / "web-8000" / "counter_123.db"
        stale.parent.mkdir()
        stale.write_bytes(b"old")
        prepared = prepare_metrics_dir(str(tmp_path), "web-8000")
        assert prepared.path == tmp_path / "web-8000" and not prepared.temporary
        assert not stale.exists()
        prepared.cleanup()
        assert prepared.path.exists()

    def test_without_a_configured_directory_a_temporary_one(self) -> None:
        prepared = prepare_metrics_dir(None, "worker-9808")
        assert prepared.temporary and prepared.path.is_dir()
        prepared.cleanup()
        assert not prepared.path.exists()


class TestDashboard:
    def test_every_metric_the_dashboard_uses_exists(self) -> None:
        root = Path(__file__).resolve().parents[4]
        dashboard = json.loads((root / "docs" / "grafana-dashboard.json").read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        used = {m for e in exprs for m in re.findall(r"\bingest_[a-z_]+", e)}
        known = {m._name for m in metrics.ALL_METRICS} | {
            "ingest_queue_messages",
            "ingest_dlq_entries",
            "ingest_queue_stats_up",
        }
        suffixes = ("_total", "_bucket", "_sum", "_count")
        for name in used:
            base = next((name[: -len(s)] for s in suffixes if name.endswith(s)), name)
            assert base in known or name in known, name


def test_the_cached_process_id_is_the_childs_own_after_a_fork() -> None:
    import os

    from ingest.observability.metrics import current_pid

    assert current_pid() == os.getpid()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child reports through the pipe)
        os.write(write, str(current_pid()).encode())
        os._exit(0)
    os.close(write)
    reported = int(os.read(read, 32))
    os.waitpid(child, 0)
    os.close(read)
    assert reported == child != os.getpid()
