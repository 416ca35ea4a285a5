"""Metrics of the real processes: the web's /metrics adds up every gunicorn worker, and a Celery
worker serves its pool processes' metrics on its own port."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import requests
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families

from tests.support.golden import FIXTURES, run_import
from tests.support.processes import ProcessGroup
from tests.support.services import free_port, wait_for

pytestmark = pytest.mark.integration


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    answer = requests.get(url, timeout=5)
    answer.raise_for_status()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_web_metrics_add_up_every_gunicorn_worker(
    stack_env: dict[str, str], procs: ProcessGroup, tmp_path: Path
) -> None:
    env = dict(stack_env, INGEST_OBSERVABILITY__METRICS_DIR=str(tmp_path / "metrics"))
    proc, base = procs.start_web(env, workers=2)
    web_dir = tmp_path / "metrics" / f"web-{urlparse(base).port}"
    sent = 0

    def both_workers_answered() -> bool:
        nonlocal sent
        # Concurrent fresh connections, so that both workers get some of them.
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: requests.post(f"{base}/v1/webhooks/nope"), range(8)))
        assert all(a.status_code == 404 for a in answers)
        sent += len(answers)
        return len({p.stem.rsplit("_", 1)[1] for p in web_dir.glob("counter_*.db")}) >= 2

    wait_for(both_workers_answered, 30, 0.1, "both gunicorn workers to answer")
    labels = {"source": "unknown", "status": "404", "reason": "unknown_source"}

    def all_counted() -> dict[Any, float] | None:
        # Each worker writes its counts about once a second (docs/observability.md).
        found = scrape(f"{base}/metrics")
        counted = sample(found, "ingest_webhook_requests_total", **labels)
        assert counted <= sent, f"{counted} requests counted, {sent} sent"
        return found if counted == sent else None

    samples = wait_for(all_counted, 10, 0.2, "every worker's counts to reach /metrics")
    assert sample(samples, "ingest_queue_stats_up") == 1
    assert sample(samples, "ingest_queue_messages", queue="ingest.webhooks") == 0
    assert sample(samples, "ingest_dlq_entries") == 0
    proc.stop(signal.SIGINT, timeout=15)  # quick shutdown: nothing is in flight


def test_worker_serves_its_pool_processes_metrics(
    stack_env: dict[str, str], procs: ProcessGroup, s3_client: Any, bucket: str
) -> None:
    port = free_port()
    env = dict(stack_env, INGEST_OBSERVABILITY__WORKER_METRICS_PORT=str(port))
    procs.start_worker(env, concurrency=2, extra="--without-mingle --without-gossip")
    s3_client.put_object(
        Bucket=bucket, Key="m/clean.csv", Body=(FIXTURES / "entities" / "clean.csv").read_bytes()
    )
    app = Celery(broker=env["INGEST_REDIS_URL"], backend=env["INGEST_REDIS_URL"])
    assert app.send_task("ingest.control.ping", queue="ingest.control").get(timeout=30) == "pong"
    with pytest.raises(TypeError):  # a ping takes no arguments: the run fails
        app.send_task("ingest.control.ping", args=["extra"], queue="ingest.control").get(timeout=30)
    state = run_import(env, f"s3://{bucket}/m/")
    assert state["status"] == "succeeded" and state["rowsStored"] > 0

    def scraped() -> dict[Any, float] | None:
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        stored = sample(samples, "ingest_import_rows_total", schema="entities", outcome="stored")
        return samples if stored == state["rowsStored"] else None

    samples = wait_for(scraped, 20, 0.2, "the import's rows in the worker's metrics")
    runs = "ingest_task_runs_total"
    assert sample(samples, runs, task="ingest.control.ping", state="SUCCESS") == 1
    assert sample(samples, runs, task="ingest.s3.range", state="SUCCESS") >= 1
    assert sample(samples, runs, task="ingest.control.ping", state="FAILURE") == 1
    assert sample(samples, "ingest_task_failures_total", task="ingest.control.ping") == 1
    bytes_read = sample(samples, "ingest_import_bytes_total", schema="entities")
    assert bytes_read == state["bytesProcessed"]
    assert sample(samples, "ingest_task_duration_seconds_count", task="ingest.s3.range") >= 1
    app.close()
