"""The group-commit publisher: what it publishes, and how it pushes back when it cannot keep up."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ingest.devstack import wait_for
from webapp.publisher import BatchPublisher, PublishError

FIELDS = {"source": "acme", "sourceUri": "http://h/v1/webhooks/acme"}


def events(n: int, tag: str = "e") -> list[dict[str, Any]]:
    return [{"eventId": f"{tag}{i}", "contentHash": "0" * 64} for i in range(n)]


class Recorder:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gate = gate
        self.sending = threading.Event()

    def __call__(self, payload: dict[str, Any]) -> None:
        self.sending.set()
        if self.gate is not None:
            self.gate.wait(10)
        self.sent.append(payload)


def test_events_are_published_in_messages_of_at_most_max_events() -> None:
    send = Recorder()
    publisher = BatchPublisher(send, max_events=3, max_wait=0.01)
    try:
        publisher.submit(FIELDS, events(7))
    finally:
        publisher.close()
    assert [len(p["events"]) for p in send.sent] == [3, 3, 1]
    assert all(p["source"] == "acme" and p["batchId"] for p in send.sent)


def test_a_request_that_times_out_before_publishing_is_withdrawn() -> None:
    send = Recorder()
    # A partial batch waits a minute for company: the request gives up first.
    publisher = BatchPublisher(send, max_events=100, max_wait=60, timeout=0.2)
    with pytest.raises(PublishError, match="timed out"):
        publisher.submit(FIELDS, events(2))
    publisher.close()  # flushes whatever is still buffered
    assert send.sent == []


def test_too_many_waiting_events_are_refused_at_once() -> None:
    gate = threading.Event()
    send = Recorder(gate)  # the broker hangs until the gate opens
    publisher = BatchPublisher(send, max_events=2, max_wait=0.001, max_pending=4)
    first = threading.Thread(target=publisher.submit, args=(FIELDS, events(4, "a")))
    first.start()
    try:
        wait_for(lambda: publisher._pending == 4, 10, 0.005, "the first request queued")
        assert publisher.saturated()
        with pytest.raises(PublishError, match="already wait"):
            publisher.submit(FIELDS, events(1, "b"))
        gate.set()
        first.join(10)
        # Once the backlog is published, requests are taken again.
        wait_for(lambda: publisher._pending == 0, 10, 0.005, "the backlog published")
        assert not publisher.saturated()
        publisher.submit(FIELDS, events(1, "c"))
    finally:
        gate.set()
        publisher.close()
    published = sorted(e["eventId"] for p in send.sent for e in p["events"])
    assert published == ["a0", "a1", "a2", "a3", "c0"]


def test_without_linger_events_queued_during_a_publish_share_the_next_message() -> None:
    gate = threading.Event()
    send = Recorder(gate)
    publisher = BatchPublisher(send, max_events=100, max_wait=0)
    first = threading.Thread(target=publisher.submit, args=(FIELDS, events(1, "a")))
    first.start()
    assert send.sending.wait(10)  # the first event is being published, alone
    later = [
        threading.Thread(target=publisher.submit, args=(FIELDS, events(1, f"b{n}")))
        for n in range(5)
    ]
    try:
        for thread in later:
            thread.start()
        wait_for(lambda: publisher._pending == 6, 10, 0.005, "five more events waiting")
    finally:
        gate.set()
        for thread in [first, *later]:
            thread.join(10)
        publisher.close()
    assert [len(p["events"]) for p in send.sent] == [1, 5]


@pytest.mark.parametrize(
    ("config", "direct"),
    [
        ({"redisUrl": "redis://r:6379/0"}, True),
        ({"redisUrl": "redis://r:6379/0", "brokerUrl": "redis://r:6379/0"}, True),
        ({"redisUrl": "redis://r:6379/0", "brokerUrl": "redis://r:6379/1"}, False),
        ({"redisUrl": "redis://r:6379/0", "brokerUrl": "amqp://guest@rabbit//"}, False),
    ],
)
def test_batch_messages_go_with_the_outbox_only_when_its_redis_is_the_broker(
    config: dict[str, str], direct: bool
) -> None:
    from ingest.config import build_settings
    from webapp.publisher import writes_broker

    assert writes_broker(build_settings(config)) is direct
