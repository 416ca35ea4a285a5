"""A drained batch's pre-storage latencies count each event, though observed once per
distinct receipt time."""

from __future__ import annotations

from prometheus_client import REGISTRY

from ingest.observability import metrics
from tasks.webhooks import _observe_latencies

NAME = "ingest_webhook_pre_storage_latency_seconds"


def _samples(source: str) -> dict[str, float]:
    label = metrics.source_label(source)
    found = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name.startswith(NAME) and sample.labels.get("source") == label:
                found[sample.name + sample.labels.get("le", "")] = sample.value
    return found


def test_every_event_counts_as_one_observation() -> None:
    metrics.set_known_sources(None)
    source = "latency-test"
    before = _samples(source)
    events = [{"receivedAtEpoch": 100.0}] * 3 + [{"receivedAtEpoch": 99.0}]
    _observe_latencies(source, events, now=100.02)
    after = _samples(source)

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta(NAME + "_count") == 4
    assert abs(delta(NAME + "_sum") - (3 * 0.02 + 1.02)) < 1e-9
    assert delta(NAME + "_bucket+Inf") == 4
    buckets = sorted(
        (float(key.removeprefix(NAME + "_bucket")), delta(key))
        for key in after
        if key.startswith(NAME + "_bucket") and not key.endswith("+Inf")
    )
    # Cumulative buckets: three events at 20 ms, one at 1.02 s.
    assert all(count == (3 if bound < 1.02 else 4) for bound, count in buckets if bound >= 0.02)
    assert all(count == 0 for bound, count in buckets if bound < 0.02)
