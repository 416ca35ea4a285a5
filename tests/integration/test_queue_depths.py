"""Queue depths come from the broker's own API, priority sub-queues included."""

from __future__ import annotations

import pytest
import redis

from ingest.config import build_settings
from tasks.factory import app_for, queue_depths

pytestmark = pytest.mark.integration


def test_depths_count_every_waiting_message_whatever_its_priority(
    redis_url: str, redis_client: redis.Redis
) -> None:
    settings = build_settings({"redisUrl": redis_url})
    assert queue_depths(settings, ["ingest.dlq", "ingest.ranges"]) == {
        "ingest.dlq": 0,
        "ingest.ranges": 0,
    }
    app = app_for(settings)
    for priority in (None, 0, 5, 9):
        app.send_task("ingest.test.nothing", queue="ingest.dlq", priority=priority)
    assert queue_depths(settings, ["ingest.dlq", "ingest.ranges"]) == {
        "ingest.dlq": 4,
        "ingest.ranges": 0,
    }
