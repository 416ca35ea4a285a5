"""kill -9 of Redis (AOF on) under webhook load: 503 + Retry-After while down, self-healing after.

Every event answered 202 before, during or after the outage, single or in a batch request,
is stored exactly once.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from ingest.hashing import canonical_json, sha256_hex
from tests.support.processes import ProcessGroup
from tests.support.services import ManagedProcess, RedisServer, wait_for
from tests.support.webhook_stack import stored_event_ids

pytestmark = pytest.mark.faults

SOURCES = {
    "open": {
        "signature": {"scheme": "none"},
        "purpose": "redis-restart",
        "rateLimit": {"maxPerSecond": 5000, "burstSize": 5000},
    }
}
CLIENT_TIMEOUT = 5.0  # a request unanswered this long counts as a hang (status 0)


@dataclass(frozen=True)
class Answer:
    key: str
    status: int  # 0: no answer (connection error or client timeout)
    retry_after: str | None
    sent: float
    answered: float


class Sender(threading.Thread):
    """Posts unique events one after another until stopped (or ``limit`` events)."""

    def __init__(self, url: str, limit: int = 20_000) -> None:
        super().__init__(daemon=True)
        self.url, self.limit = url, limit
        self.tag = uuid.uuid4().hex[:8]
        self.answers: list[Answer] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        with requests.Session() as session:
            for n in range(self.limit):
                if self.stopping.is_set():
                    return
                key = f"{self.tag}-{n}"
                sent = time.monotonic()
                try:
                    answer = session.post(
                        self.url,
                        json={"n": n, "tag": self.tag},
                        headers={"Idempotency-Key": key},
                        timeout=CLIENT_TIMEOUT,
                    )
                    status, retry_after = answer.status_code, answer.headers.get("Retry-After")
                except requests.RequestException:
                    status, retry_after = 0, None
                self.answers.append(Answer(key, status, retry_after, sent, time.monotonic()))
                if status == 503:
                    time.sleep(0.05)  # a polite client backs off a little

    def count(self, status: int, after: float = 0.0) -> int:
        return sum(a.status == status and a.sent >= after for a in list(self.answers))


class BatchSender(Sender):
    """Posts batches of ``size`` unique events; one answer per event, keyed by its content
    hash (the batch events' id: the source has no id field)."""

    def __init__(self, url: str, size: int = 10, limit: int = 2_000) -> None:
        super().__init__(url, limit)
        self.size = size

    def run(self) -> None:
        with requests.Session() as session:
            for n in range(self.limit):
                if self.stopping.is_set():
                    return
                events = [{"b": n, "i": i, "tag": self.tag} for i in range(self.size)]
                body = "\n".join(json.dumps(e) for e in events).encode()
                sent = time.monotonic()
                try:
                    answer = session.post(
                        self.url,
                        data=body,
                        headers={
                            "Content-Type": "application/x-ndjson",
                            "Idempotency-Key": f"{self.tag}-batch-{n}",
                        },
                        timeout=CLIENT_TIMEOUT,
                    )
                    status, retry_after = answer.status_code, answer.headers.get("Retry-After")
                except requests.RequestException:
                    status, retry_after = 0, None
                done = time.monotonic()
                for event in events:
                    key = sha256_hex(canonical_json(event))
                    self.answers.append(Answer(key, status, retry_after, sent, done))
                if status == 503:
                    time.sleep(0.05)


def test_kill_9_of_redis_under_webhook_load(
    stack_env: dict[str, str], procs: ProcessGroup, own_redis: RedisServer, sink_dir: Path
) -> None:
    env = dict(
        stack_env,
        INGEST_REDIS_URL=own_redis.url,
        INGEST_HTTP__SOURCES=json.dumps(SOURCES),
        # The least Celery allows: a message left unacknowledged by the outage comes back soon.
        INGEST_CELERY__VISIBILITY_TIMEOUT="30",
        # Events a drain read before the outage and did not store are read again this soon;
        # batches merely slow to store are stored once all the same.
        INGEST_HTTP__REDELIVER_AFTER="5",
    )
    worker = procs.start_worker(env)
    _, base = procs.start_web(env, workers=2)
    sender = Sender(f"{base}/v1/webhooks/open")
    batches = BatchSender(f"{base}/v1/webhooks/open/batch")
    sender.start()
    batches.start()
    try:
        wait_for(lambda: sender.count(202) >= 100, 30, 0.05, "100 accepted events")

        own_redis.signal_group(signal.SIGKILL)
        own_redis.stop(timeout=10)  # reaps the killed process; the port and dir stay ours
        killed = time.monotonic()
        wait_for(lambda: sender.count(503, after=killed) >= 20, 30, 0.05, "503s while down")
        restarted = time.monotonic()
        own_redis.start()  # same port, same directory: it replays its AOF

        # The web recovers by itself: no restart of web or worker.
        wait_for(lambda: sender.count(202, after=restarted) >= 100, 60, 0.05, "202s again")
    finally:
        for thread in (sender, batches):
            thread.stopping.set()
        for thread in (sender, batches):
            thread.join(CLIENT_TIMEOUT + 5)
    # Single events and the events of batch requests alike.
    answers = sender.answers + batches.answers
    assert batches.count(202) > 0

    # Never a 500, never a hang, never an unexpected status.
    assert {a.status for a in answers} <= {202, 503}, sorted({a.status for a in answers})
    assert max(a.answered - a.sent for a in answers) < CLIENT_TIMEOUT
    # Sent after the kill and answered before the restart: all 503, with Retry-After.
    down = [a for a in answers if a.sent >= killed and a.answered <= restarted]
    assert len(down) >= 20
    assert all(a.status == 503 and a.retry_after for a in down), down[:5]
    assert all(a.retry_after for a in answers if a.status == 503)

    accepted = {a.key for a in answers if a.status == 202}

    def all_stored() -> bool:
        return accepted <= set(stored_event_ids(sink_dir))

    # The visibility timeout (30 s) plus the transport's 10 s restore interval, or the 30 s
    # a worker is given to exit after an unrecoverable error.
    wait_for(lambda: all_stored() or not worker.alive(), 60, 0.2, "stored, or the worker gone")
    if not worker.alive():
        # Kombu can fail to ack or to restore when Redis goes away (kombu #582/#970), and
        # Celery then stops the worker (tasks/watchdog.py makes sure it exits): do what its
        # supervisor does.
        exited = f"worker exited (code {worker.stop()}): {unrecoverable(worker)}"
        warnings.warn(exited, stacklevel=1)
        procs.start_worker(env)
    try:
        wait_for(all_stored, 45, 0.2, "every accepted event in the sink")
    except TimeoutError:
        missing = accepted - set(stored_event_ids(sink_dir))
        when = sorted(
            f"{a.key[:12]} sent {a.sent - killed:+.3f}s answered {a.answered - killed:+.3f}s"
            for a in answers
            if a.key in missing
        )
        pytest.fail(f"{missing_events(env, missing)}; relative to the kill: {when[:12]}")
    stored = stored_event_ids(sink_dir)
    assert max(stored.values()) == 1, [k for k, c in stored.items() if c > 1][:5]
    # An event answered 503 may be stored anyway (its publish reached Redis just before the
    # kill), which is harmless: the client retries it under the same key.
    assert set(stored) <= {a.key for a in answers}


def unrecoverable(worker: ManagedProcess) -> str:
    lines = [ln for ln in worker.log_tail(400).splitlines() if "Unrecoverable error" in ln]
    return lines[0][:300] if lines else "no 'Unrecoverable error' line"


def missing_events(env: dict[str, str], missing: set[str]) -> str:
    """Where the accepted events that never reached the sink are: still in the source's
    stream (read by a drain and pending, or not read yet), or gone."""
    import redis

    from ingest.webhooks.drain import GROUP
    from ingest.webhooks.stream import stream_key

    client = redis.Redis.from_url(env["INGEST_REDIS_URL"])
    try:
        entries = client.xrange(stream_key("open"))
        pending = {
            p["message_id"]
            for p in client.xpending_range(stream_key("open"), GROUP, "-", "+", 10_000)
        }
    finally:
        client.close()
    holding: dict[str, str] = {}
    for entry_id, fields in entries:
        text = b" ".join(fields.values()).decode("utf-8", "replace")
        for key in missing:
            if key in text:
                holding[key] = "pending" if entry_id in pending else "unread"
    places = Counter(holding.get(key, "gone") for key in missing)
    return f"{len(missing)} accepted events not stored ({dict(places)}): {sorted(missing)[:5]}"
