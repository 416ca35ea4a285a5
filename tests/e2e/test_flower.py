"""Flower from the Procfile sees the Procfile's worker and the tasks it ran."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from celery import Celery

from tests.support.processes import ProcessGroup
from tests.support.services import free_port, wait_for

pytestmark = pytest.mark.e2e


def test_flower_lists_the_worker_and_its_tasks(
    stack_env: dict[str, str], procs: ProcessGroup
) -> None:
    # Flower 2 answers its API only with authentication configured or this switch set.
    env = dict(stack_env, FLOWER_PORT=str(free_port()), FLOWER_UNAUTHENTICATED_API="true")
    flower = procs.start_procfile("flower", env)  # boots while the worker starts
    procs.start_worker(env, extra="--without-mingle")
    base = f"http://127.0.0.1:{env['FLOWER_PORT']}"

    def workers() -> dict[str, Any] | None:
        if not flower.alive():
            raise RuntimeError(f"flower exited:\n{flower.log_tail()}")
        answer = requests.get(f"{base}/api/workers", params={"refresh": 1}, timeout=5)
        return answer.json() if answer.status_code == 200 and answer.json() else None

    listed = wait_for(workers, 60, 0.3, "Flower to list the worker")
    assert [name for name in listed if name.startswith("w1@")]  # start_worker's -n w<index>@%h

    app = Celery(broker=env["INGEST_REDIS_URL"], backend=env["INGEST_REDIS_URL"])
    task_id = app.send_task("ingest.control.ping", queue="ingest.control").id

    def task_seen() -> dict[str, Any] | None:
        tasks = requests.get(f"{base}/api/tasks", timeout=5).json()
        found = tasks.get(task_id)
        return found if found and found.get("state") == "SUCCESS" else None

    seen = wait_for(task_seen, 30, 0.3, "Flower to show the ping task")
    assert seen["name"] == "ingest.control.ping"
    app.close()
