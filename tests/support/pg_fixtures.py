"""PostgreSQL for tests: one server a session (or INGEST_TEST_POSTGRES_URL), a table a test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from devstack.postgres import PostgresServer


def with_table(url: str, table: str) -> str:
    """``url`` with the sink's ``table`` query parameter added."""
    return f"{url}{'&' if '?' in url else '?'}table={table}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL: INGEST_TEST_POSTGRES_URL when given, else a server of our own."""
    given = os.environ.get("INGEST_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    # Installs Debian's postgresql first when we are root and it is missing.
    server = PostgresServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture()
def pg_table(postgres_url: str) -> Iterator[str]:
    """A table name of this test's own; its tables are dropped afterwards."""
    import psycopg

    table = f"t_{uuid.uuid4().hex[:12]}"
    yield table
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}, {table}_batches")


@pytest.fixture()
def pg_sink_uri(postgres_url: str, pg_table: str) -> str:
    """A PostgreSQL sink URI whose table belongs to this test alone."""
    return with_table(postgres_url, pg_table)
