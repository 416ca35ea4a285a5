"""The Procfile's `web` and `worker` run as they stand and serve /readyz."""

from __future__ import annotations

import pytest
import requests
from celery import Celery

from tests.support.processes import ProcessGroup

pytestmark = pytest.mark.e2e


def test_web_and_worker_from_procfile_are_ready(
    stack_env: dict[str, str], procs: ProcessGroup
) -> None:
    procs.start_worker(stack_env)
    _, base = procs.start_web(stack_env)

    ready = requests.get(f"{base}/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"redis": "ok", "sink": "ok"}}
    assert requests.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}

    app = Celery(broker=stack_env["INGEST_REDIS_URL"], backend=stack_env["INGEST_REDIS_URL"])
    assert app.send_task("ingest.control.ping", queue="ingest.control").get(timeout=30) == "pong"


def test_readyz_reports_a_dependency_down(stack_env: dict[str, str], procs: ProcessGroup) -> None:
    env = dict(stack_env, INGEST_REDIS_URL="redis://127.0.0.1:1/0")
    _, base = procs.start_web(env)
    answer = requests.get(f"{base}/readyz", timeout=10)
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert answer.json()["checks"]["redis"].startswith("down")


def test_bad_config_stops_the_web_with_the_key_named(
    stack_env: dict[str, str], procs: ProcessGroup
) -> None:
    proc = procs.start_procfile("web", dict(stack_env, INGEST_S3CSV__BATCH_SIZE="lots"))
    assert proc.proc is not None
    proc.proc.wait(timeout=60)
    assert proc.proc.returncode != 0
    assert "s3csv.batchSize" in proc.log_tail()
