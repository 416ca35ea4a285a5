"""One Celery app factory: one sending app per configuration, the worker's own app in a worker."""

from __future__ import annotations

import pytest

from ingest.config import Settings, build_settings
from tasks import factory
from tasks.names import QUEUE_CONTROL, QUEUE_RANGES, QUEUE_WEBHOOKS, S3_RANGE, S3_SCAN


def settings(redis_url: str = "redis://127.0.0.1:1/0") -> Settings:
    return build_settings({"redisUrl": redis_url})


def test_one_sending_app_per_configuration() -> None:
    first = factory.app_for(settings())
    assert factory.app_for(settings()) is first  # equal settings, another object
    assert factory.app_for(settings("redis://127.0.0.1:1/1")) is not first


def test_a_worker_sends_through_its_own_app(monkeypatch: pytest.MonkeyPatch) -> None:
    config = settings("redis://127.0.0.1:1/2")
    worker = factory.create_celery(config)  # tasks not loaded: only its identity matters here
    monkeypatch.setattr(factory, "_worker_app", worker)
    assert factory.app_for(config) is worker
    assert factory.app_for(settings("redis://127.0.0.1:1/3")) is not worker


@pytest.mark.parametrize(
    "task,queue",
    [(S3_RANGE, QUEUE_RANGES), (S3_SCAN, QUEUE_CONTROL), ("ingest.webhooks.drain", QUEUE_WEBHOOKS)],
)
def test_each_task_is_routed_to_its_workload_queue(task: str, queue: str) -> None:
    app = factory.app_for(settings())
    assert app.amqp.router.route({}, task)["queue"].name == queue
