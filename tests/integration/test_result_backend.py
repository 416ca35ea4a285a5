"""A worker that sends a chord subscribes to none of its results (nobody there could read them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from celery import Celery, chord
from celery._state import _set_task_join_will_block
from celery.result import task_join_will_block

from tasks.result_backend import BACKEND_CLASS, WorkerRedisBackend

pytestmark = pytest.mark.integration


@pytest.fixture()
def in_a_worker() -> Iterator[None]:
    """What a worker's pool sets in every worker process (main and children)."""
    before = task_join_will_block()
    _set_task_join_will_block(True)
    try:
        yield
    finally:
        _set_task_join_will_block(before)


def chord_subscriptions(redis_url: str, client: redis.Redis) -> int:
    app = Celery(broker=redis_url, backend=f"{BACKEND_CLASS}+{redis_url}")
    try:
        assert isinstance(app.backend, WorkerRedisBackend)

        @app.task(name="test.part", shared=False)
        def part(x: int) -> int:
            return x

        @app.task(name="test.whole", shared=False)
        def whole(parts: list[int]) -> int:
            return sum(parts)

        result = chord([part.s(i) for i in range(8)])(whole.s())
        channels = [f"celery-task-meta-{child.id}" for child in result.parent.results]
        return sum(count for _, count in client.pubsub_numsub(*channels))
    finally:
        app.close()


def test_a_chord_sent_from_a_worker_leaves_no_subscription(
    redis_url: str, redis_client: redis.Redis, in_a_worker: None
) -> None:
    assert chord_subscriptions(redis_url, redis_client) == 0
    assert redis_client.llen("celery") == 8  # the header was sent all the same


def test_a_process_that_may_wait_on_results_still_subscribes(
    redis_url: str, redis_client: redis.Redis
) -> None:
    assert not task_join_will_block()
    assert chord_subscriptions(redis_url, redis_client) == 8
