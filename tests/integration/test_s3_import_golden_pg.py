"""The golden S3 import again, stored in PostgreSQL: the same rows, provenance and counts."""

from __future__ import annotations

from typing import Any

import pytest

from ingest.provenance.verify import records_at, verify_records
from ingest.sinks import open_sink
from tests.integration.test_s3_import_golden import check_rejected, check_state, check_stored
from tests.support.golden import EXPECTED, run_import, upload_fixtures
from tests.support.processes import ProcessGroup

pytestmark = pytest.mark.integration


@pytest.fixture()
def pg_golden_env(stack_env: dict[str, str], pg_sink_uri: str) -> dict[str, str]:
    """golden_env of test_s3_import_golden, with the sink in PostgreSQL."""
    range_size = str(EXPECTED["rangeSize"])
    return dict(stack_env, INGEST_S3CSV__RANGE_SIZE=range_size, INGEST_SINK_URI=pg_sink_uri)


def test_golden_import_into_postgres_row_for_row_and_once(
    pg_golden_env: dict[str, str],
    pg_sink_uri: str,
    procs: ProcessGroup,
    s3_client: Any,
    bucket: str,
) -> None:
    upload_fixtures(s3_client, bucket, "golden/")
    procs.start_worker(pg_golden_env)
    state = run_import(pg_golden_env, f"s3://{bucket}/golden/")

    check_state(state)
    sink = open_sink(pg_sink_uri)
    check_stored([r.record for r in sink.iter_records()], bucket, "golden/")
    assert verify_records(records_at(pg_sink_uri)).ok
    check_rejected(pg_golden_env["INGEST_REDIS_URL"], state["importId"])

    # The same import again: every range resumes and PostgreSQL holds each row once.
    again = run_import(pg_golden_env, f"s3://{bucket}/golden/")
    assert again["status"] == "succeeded"
    assert again["ranges"]["resumed"] == again["ranges"]["total"]
    assert sum(1 for _ in sink.iter_records()) == EXPECTED["counts"]["rowsStored"]
