"""SIGTERM (a deploy, a scale-down) to the worker during an import and to the web under load."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.faults.test_worker_kill import (
    assert_every_row_once,
    import_state,
    input_csv,
    wait_finished,
)
from tests.support.processes import ProcessGroup
from tests.support.services import ManagedProcess, wait_for
from tests.support.webhook_stack import start_stack, stored_event_ids

pytestmark = pytest.mark.faults

EXIT_TIMEOUT = 40  # seconds: well past a 64 KiB range's run time, inside gunicorn's 30 s grace


def terminate(proc: ManagedProcess) -> None:
    """SIGTERM to the main process only, as `kill PID` or a process manager sends it."""
    os.kill(proc.pid, signal.SIGTERM)


def task_ids(log: str, what: str) -> set[str]:
    """Ids of the range tasks the worker's log reports as ``received`` or ``succeeded``."""
    return set(re.findall(rf"ingest\.s3\.range\[([0-9a-f-]+)\] {what}", log))


def exit_code(proc: ManagedProcess) -> int:
    assert proc.proc is not None
    return proc.proc.wait(timeout=EXIT_TIMEOUT)


def test_sigterm_to_the_worker_during_an_import(
    stack_env: dict[str, str], procs: ProcessGroup, s3_client: Any, bucket: str, sink_dir: Path
) -> None:
    data = input_csv(30_000)
    s3_client.put_object(Bucket=bucket, Key="term/input.csv", Body=data)
    env = dict(
        stack_env,
        INGEST_S3CSV__RANGE_SIZE="65536",
        INGEST_S3CSV__DEDUPLICATION__ENABLED="false",
        # Far beyond the test: only the warm shutdown's requeue can bring tasks back in time.
        INGEST_CELERY__VISIBILITY_TIMEOUT="600",
        # 2 processes x 4: the worker holds reserved tasks beyond the 2 it runs.
        INGEST_CELERY__PREFETCH_MULTIPLIER="4",
    )
    worker = procs.start_worker(env)

    from ingest.config import load_settings
    from ingest.runtime import Runtime
    from tasks.imports import submit_import

    rt = Runtime(load_settings(env))
    request = {"uri": f"s3://{bucket}/term/", "schema": "events_wide", "purpose": "fault-test"}
    import_id = submit_import(rt.settings, rt.redis, rt.schemas, request, "test")

    def progressed() -> bool:
        ranges = import_state(env, import_id).get("ranges", {})
        return bool(ranges.get("total")) and ranges["done"] >= 0.3 * ranges["total"]

    wait_for(progressed, 120, 0.05, "30% of the ranges")
    terminate(worker)
    # Warm shutdown: the running ranges finish, the reserved ones go back to the queue.
    assert exit_code(worker) == 0, worker.log_tail()
    log = worker.log_tail(100_000)
    assert "WorkerLostError" not in log and "Unrecoverable" not in log, log[-3000:]
    # Every task it took either ran to success or went back to the queue unstarted.
    received, succeeded = task_ids(log, "received"), task_ids(log, "succeeded")
    restored = re.search(r"Restoring (\d+) unacknowledged message", log)
    assert restored is not None, "the reserved tasks were not given back"
    # Restored may also hold a message taken from Redis but not yet logged as received.
    assert succeeded <= received and len(received - succeeded) <= int(restored[1]), log[-3000:]
    assert "raised unexpected" not in log and "retry:" not in log
    done_at_exit = import_state(env, import_id)["ranges"]
    assert done_at_exit["done"] < done_at_exit["total"], "the import ended before the SIGTERM"

    procs.start_worker(env)

    state = wait_finished(env, import_id, 120, "the import to finish in the new worker")
    assert_every_row_once(state, data, sink_dir)


SOURCES = {
    "open": {
        "signature": {"scheme": "none"},
        "purpose": "graceful-shutdown",
        "rateLimit": {"maxPerSecond": 5000, "burstSize": 5000},
    }
}


def test_sigterm_to_the_web_under_webhook_load(
    stack_env: dict[str, str], procs: ProcessGroup, sink_dir: Path
) -> None:
    env = dict(stack_env, INGEST_HTTP__SOURCES=json.dumps(SOURCES))
    web, base = start_stack(procs, env)
    tag = uuid.uuid4().hex[:8]
    answers: list[tuple[str, int, float, float]] = []  # key, status (0: no answer), sent, done
    lock = threading.Lock()
    stop = threading.Event()

    def client(worker: int) -> None:
        for n in range(worker * 100_000, worker * 100_000 + 5_000):
            if stop.is_set():
                return
            key, sent = f"{tag}-{n}", time.monotonic()
            try:
                # A new connection each: gunicorn's graceful stop waits for keep-alive ones.
                status = requests.post(
                    f"{base}/v1/webhooks/open",
                    json={"n": n},
                    headers={"Idempotency-Key": key},
                    timeout=10,
                ).status_code
            except requests.RequestException:
                status = 0
            with lock:
                answers.append((key, status, sent, time.monotonic()))
            if status == 0:
                return  # the listener is gone

    threads = [threading.Thread(target=client, args=(w,), daemon=True) for w in range(8)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: sum(a[1] == 202 for a in answers) >= 150, 30, 0.01, "150 accepted")
        terminated = time.monotonic()
        terminate(web)
        code = exit_code(web)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    assert code == 0, web.log_tail()

    codes = Counter(status for _, status, _, _ in answers)
    assert set(codes) <= {202, 200, 429, 503, 0}, codes
    # No answer only once the listener closed: never for a request that had ended before.
    assert all(sent >= terminated or done >= terminated for _, s, sent, done in answers if s == 0)
    # Requests in flight when the SIGTERM came were answered (gunicorn's graceful stop).
    in_flight = [status for _, status, sent, done in answers if sent < terminated <= done]
    assert in_flight and 0 not in in_flight, Counter(in_flight)

    accepted = {key for key, status, _, _ in answers if status == 202}
    wait_for(lambda: accepted <= set(stored_event_ids(sink_dir)), 30, 0.2, "accepted events")
    stored = stored_event_ids(sink_dir)
    assert max(stored.values()) == 1
    assert set(stored) <= {key for key, _, _, _ in answers}
