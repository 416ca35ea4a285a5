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


def test_study_rows_carry_pre_storage_and_cpu() -> None:
    imported = {
        "scenario": "s3_import",
        "extra": {"mbps": 20.5, "succeeded": True},
        "cpu": run.cpu_cost({}, {"web": 0.1, "worker": 8.0, "redis": 3.0}, {}, 250_000_000),
    }
    batch = {
        "scenario": "webhooks_batch",
        "extra": {"eventsPerSecond": 3000},
        "metrics": {"http_req_failed": {"values": {"rate": 0.0}}},
        "preStorage": {"p95Ms": 48.0},
        "cpu": run.cpu_cost({}, {"web": 1.0, "worker": 1.0, "redis": 0.5}, {"stored": 10000}, 0),
    }
    table = run.study_markdown([{"stack": "c=1", "results": [imported, batch]}], "T")
    assert "| c=1 | s3_import | 20.5 MB/s |  |  | ok | 0 / 32 / 12 ms/MB |" in table
    assert (
        "| c=1 | webhooks_batch | 3,000 events/s | n/a | 48.0 | 0.000% | 100 / 100 / 50 µs/event |"
        in table
    )
