"""A sink outage: the web stays ready and keeps accepting; nothing accepted is lost.

The sink is an S3 bucket that does not exist yet. `/readyz` must answer 200 `degraded` (a
load balancer keeps the web in), events get 202, the worker retries and dead-letters them,
and once the bucket exists `ingest dlq retry --all` stores every event exactly once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import pytest
import redis
import requests

from ingest.dlq import DeadLetterQueue
from ingest.provenance.verify import records_at
from ingest.webhooks.stream import stream_key
from tests.support.processes import ProcessGroup
from tests.support.services import wait_for

pytestmark = pytest.mark.faults
EVENTS = 20


def sink_up_gauge(base: str) -> str:
    text = requests.get(f"{base}/metrics", timeout=5).text
    lines = [ln for ln in text.splitlines() if ln.startswith("ingest_dependency_up{")]
    return next((ln.rsplit(" ", 1)[1] for ln in lines if 'dependency="sink"' in ln), "")


def test_web_stays_ready_through_a_sink_outage_and_nothing_is_lost(
    stack_env: dict[str, str], procs: ProcessGroup, s3_client: Any
) -> None:
    sink_bucket = f"sink-{uuid.uuid4().hex[:12]}"  # not created yet: the sink is down
    env = dict(
        stack_env,
        INGEST_SINK_URI=f"s3://{sink_bucket}/records",
        INGEST_HTTP__SOURCES=json.dumps(
            {"open": {"signature": {"scheme": "none"}, "purpose": "outage-test"}}
        ),
        INGEST_CELERY__MAX_RETRIES="1",
        INGEST_HTTP__REDELIVER_AFTER="1",
        INGEST_S3CSV__RETRY_BACKOFF_MAX="1",
    )
    procs.start_worker(env)
    _, base = procs.start_web(env)

    ready = requests.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "degraded"
    assert body["checks"]["redis"] == "ok" and body["checks"]["sink"].startswith("down")
    assert "Retry-After" not in ready.headers
    assert sink_up_gauge(base) == "0.0"

    session = requests.Session()
    for n in range(EVENTS):
        answer = session.post(f"{base}/v1/webhooks/open", json={"n": n}, timeout=10)
        assert answer.status_code == 202, answer.text

    client = redis.Redis.from_url(env["INGEST_REDIS_URL"])
    dlq = DeadLetterQueue(client)
    # Read again, then dead-lettered: an event leaves its stream only once it is in the DLQ.
    wait_for(
        lambda: client.xlen(stream_key("open")) == 0 and dlq.depth() > 0,
        120,
        0.2,
        "every event dead-lettered",
    )

    s3_client.create_bucket(Bucket=sink_bucket)
    ready = requests.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert sink_up_gauge(base) == "1.0"

    retried = subprocess.run(
        [sys.executable, "-m", "cli.main", "dlq", "retry", "--all"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert retried.returncode == 0, retried.stderr
    assert dlq.depth() == 0
    stored = [r.record["data"]["n"] for r in records_at(f"s3://{sink_bucket}/records", s3_client)]
    assert sorted(stored) == list(range(EVENTS))
