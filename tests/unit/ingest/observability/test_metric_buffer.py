"""The metric buffer: updates held until a flush add up to what direct updates give."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from ingest.observability import metrics
from ingest.observability.metrics import EventOutcome
from ingest.observability.metrics.buffer import BUFFER, MetricBuffer

BOUNDS = (0.005, 0.01, 0.025, 0.1, 1.0)
# Values below, on and above the bounds: a value equal to a bound belongs to that bucket.
VALUES = [0.0, 0.001, 0.005, 0.0051, 0.01, 0.02, 0.025, 0.5, 1.0, 1.5, 99.0, 0.005]


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def fill(buffer: MetricBuffer, registry: CollectorRegistry) -> None:
    counter = Counter("c", "c", ["kind"], registry=registry)
    histogram = Histogram("h", "h", ["kind"], buckets=BOUNDS, registry=registry)
    for i, v in enumerate(VALUES):
        buffer.inc(counter.labels("a"))
        buffer.inc(counter.labels("b" if i % 2 else "a"), 2.5)
        buffer.observe(histogram.labels("x" if i % 3 else "y"), v)


def test_a_flush_writes_exactly_what_direct_updates_write() -> None:
    direct, buffered = CollectorRegistry(), CollectorRegistry()
    fill(MetricBuffer(), direct)  # never enabled: straight through

    buffer = MetricBuffer()
    buffer.enable()
    fill(buffer, buffered)
    assert samples(buffered)[("c_total", (("kind", "a"),))] == 0  # held until the flush
    buffer.flush()
    assert samples(buffered) == samples(direct)
    # 0.001 and twice 0.005 itself (cumulative buckets)
    assert samples(buffered)[("h_bucket", (("kind", "x"), ("le", "0.005")))] == 3


def test_updates_after_a_flush_are_held_for_the_next() -> None:
    registry = CollectorRegistry()
    counter = Counter("c", "c", ["kind"], registry=registry)
    buffer = MetricBuffer()
    buffer.enable()
    buffer.inc(counter.labels("a"))
    buffer.flush()
    buffer.inc(counter.labels("a"), 4)
    assert registry.get_sample_value("c_total", {"kind": "a"}) == 1
    buffer.disable()  # writes what is pending, and later updates go straight through
    assert registry.get_sample_value("c_total", {"kind": "a"}) == 5
    buffer.inc(counter.labels("a"))
    assert registry.get_sample_value("c_total", {"kind": "a"}) == 6


@pytest.fixture
def enabled_buffer() -> Iterator[None]:
    BUFFER.enable()
    try:
        yield
    finally:
        BUFFER.disable()


@pytest.mark.usefixtures("enabled_buffer")
def test_the_web_metrics_go_through_the_shared_buffer() -> None:
    metrics.set_known_sources(["acme"])
    try:
        child = metrics.WEBHOOK_EVENTS.labels("acme", "accepted")
        before = child._value.get()
        metrics.observe_webhook_events("acme", EventOutcome.ACCEPTED, 3)
        assert child._value.get() == before
        BUFFER.flush()
        assert child._value.get() == before + 3
    finally:
        metrics.set_known_sources(None)
