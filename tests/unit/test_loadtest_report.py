"""The load-test runner's CPU accounting: per process, per stored event and per MB."""

from __future__ import annotations

from loadtests import run


def test_cpu_cost_is_per_request_per_stored_event_and_per_megabyte() -> None:
    before = {"web": 10.0, "worker": 2.0, "k6": 0.5}
    after = {"web": 12.0, "worker": 2.5, "k6": 1.5}
    k6 = {"metrics": {"http_reqs": {"values": {"count": 100}}}, "stored": 1000}
    cost = run.cpu_cost(before, after, k6, 4_000_000)
    assert cost["seconds"] == {"web": 2.0, "worker": 0.5, "k6": 1.0}
    assert cost["microsPerRequest"] == {"web": 20000.0, "worker": 5000.0, "k6": 10000.0}
    assert cost["microsPerEvent"] == {"web": 2000.0, "worker": 500.0, "k6": 1000.0}
    assert cost["msPerMB"] == {"web": 500.0, "worker": 125.0, "k6": 250.0}


def test_a_process_started_after_the_first_reading_counts_from_zero() -> None:
    cost = run.cpu_cost({}, {"postgres": 3.0}, {"extra": {"eventsAccepted": 3}}, 0)
    assert cost == {"seconds": {"postgres": 3.0}, "microsPerEvent": {"postgres": 1e6}}


def test_cpu_table_lists_every_process_of_every_scenario() -> None:
    results = [
        {"scenario": "webhooks_batch", "cpu": run.cpu_cost({}, {"web": 1.0}, {"stored": 10}, 0)},
        {"scenario": "s3_import", "cpu": run.cpu_cost({}, {"worker": 5.0}, {}, 10_000_000)},
        {"scenario": "webhooks_burst"},  # no CPU figures: no row
    ]
    table = "\n".join(run.cpu_markdown(results))
    assert "| webhooks_batch | web | 1.00 |  | 100000 µs |  |" in table
    assert "| s3_import | worker | 5.00 |  |  | 500.0 ms |" in table
    assert "webhooks_burst" not in table
