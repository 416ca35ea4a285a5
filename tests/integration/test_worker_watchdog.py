"""A worker that stops taking messages while they wait for it exits, for its supervisor.

After a Redis restart, Celery's consumer can reconnect and then take nothing more (celery
#8030, #8091): the process is alive, answers nothing and holds up every import. Here the
consumer is stopped the way an operator would (``cancel_consumer``), which leaves the worker
in the same state: alive, idle, and messages waiting in a queue it was started to consume.
"""

from __future__ import annotations

import pytest
import redis
from celery import Celery

from tests.support.processes import ProcessGroup
from tests.support.services import wait_for

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("holding", ["nothing", "a task due in 10 minutes"])
def test_an_idle_worker_with_messages_waiting_exits_and_the_messages_stay(
    stack_env: dict[str, str], procs: ProcessGroup, redis_client: redis.Redis, holding: str
) -> None:
    env = dict(stack_env, INGEST_CELERY__CONSUMER_STALL_TIMEOUT="3")
    worker = procs.start_worker(env, extra="-Q ingest.control")
    app = Celery(broker=env["INGEST_REDIS_URL"])
    try:
        if holding != "nothing":
            # A retry with a long backoff is such a task: held by the worker until it is due,
            # it is not work in progress, and must not hide a stalled consumer.
            app.send_task(
                "ingest.control.ping", queue="ingest.control", countdown=600, ignore_result=True
            )
            wait_for(
                lambda: redis_client.llen("ingest.control") == 0, 30, 0.1, "the worker to take it"
            )
        [reply] = app.control.cancel_consumer("ingest.control", reply=True, timeout=5)
        assert "ok" in next(iter(reply.values())), reply
        app.send_task("ingest.health.nothing", queue="ingest.control", ignore_result=True)
    finally:
        app.close()

    wait_for(lambda: not worker.alive(), 60, 0.2, "the stalled worker to exit")
    assert worker.stop() == 1
    assert "while messages wait in its queues (1 in ingest.control)" in worker.log_tail(200)
    assert redis_client.llen("ingest.control") == 1  # the message waits for the next worker
