"""The PostgreSQL sink: every record one row of a table, each batch stored once however often sent.

A write loads the batch with ``COPY`` into a temporary staging table, then moves it into the
records table with ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` and notes the batch in the
batches table, all in one transaction: a batch is stored whole or not at all, and a batch
delivered twice (a retried task, two workers racing) stores nothing the second time. The unique
key is ``(batch_name, ordinal)``; docs/sinks.md says why it is not the content hash.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import pyarrow as pa
from psycopg import sql

from ingest.sinks.arrow_json import COPY_CSV_OPTIONS, copy_chunks
from ingest.sinks.base import SinkError, StoredRecord, WriteResult

__all__ = ["DEFAULT_TABLE", "PostgresSink", "TableName", "schema_statements"]

DEFAULT_TABLE = "ingest_records"
# Room is left for the "_content_hash_idx" suffix within PostgreSQL's 63-byte names.
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,45}$")

_RECORDS_DDL = """
CREATE TABLE IF NOT EXISTS {records} (
    batch_name     text        NOT NULL,
    ordinal        integer     NOT NULL,
    content_hash   text        NOT NULL,
    source_id      text        NOT NULL,
    source_type    text        NOT NULL,
    purpose        text        NOT NULL,
    classification text,
    ingested_at    timestamptz NOT NULL,
    observed_at    timestamptz,
    batch_id       text,
    provenance     jsonb       NOT NULL,
    data           jsonb       NOT NULL,
    PRIMARY KEY (batch_name, ordinal)
)"""
_INDEX_DDL = "CREATE INDEX IF NOT EXISTS {index} ON {records} (content_hash)"
_BATCHES_DDL = """
CREATE TABLE IF NOT EXISTS {batches} (
    batch_name   text        PRIMARY KEY,
    record_count integer     NOT NULL,
    written_at   timestamptz NOT NULL DEFAULT now()
)"""
# Dropped at commit (or rollback): nothing is left behind on a pooled connection.
_STAGING_DDL = (
    "CREATE TEMP TABLE ingest_staging (ordinal integer, data jsonb, provenance jsonb) "
    "ON COMMIT DROP"
)
# observedAt may come from a webhook sender: any form Python's fromisoformat() takes passes
# provenance validation, but PostgreSQL reads only some (not "2026-W15-1"). Other forms leave
# observed_at NULL instead of failing the whole batch; provenance keeps the text as sent.
_CALENDAR_TIME = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}(:?\d{2})?)?$"
_MERGE = """
INSERT INTO {records} (batch_name, ordinal, content_hash, source_id, source_type, purpose,
                       classification, ingested_at, observed_at, batch_id, provenance, data)
SELECT %(name)s, ordinal, provenance ->> 'contentHash', provenance ->> 'sourceId',
       provenance ->> 'sourceType', provenance ->> 'purpose', provenance ->> 'classification',
       (provenance ->> 'ingestedAt')::timestamptz,
       CASE WHEN provenance ->> 'observedAt' ~ %(calendar)s
            THEN (provenance ->> 'observedAt')::timestamptz END,
       provenance ->> 'batchId', provenance, data
FROM ingest_staging
ON CONFLICT (batch_name, ordinal) DO NOTHING"""
# Rows of an Arrow table turned into JSON and sent per COPY write: bounds the memory used.
_COPY_ROWS = 32_768


@dataclass(frozen=True)
class TableName:
    """The records table, ``name`` or ``schema.name``; the batches table is ``<name>_batches``."""

    schema: str | None
    name: str

    @classmethod
    def parse(cls, text: str) -> TableName:
        parts = text.split(".")
        if len(parts) > 2 or not all(_IDENTIFIER.match(p) for p in parts):
            raise ValueError(
                f"invalid sink table {text!r}: use NAME or SCHEMA.NAME "
                "(letters, digits and _, at most 46 characters each)"
            )
        return cls(parts[0], parts[1]) if len(parts) == 2 else cls(None, parts[0])

    def ident(self, suffix: str = "") -> sql.Identifier:
        if self.schema:
            return sql.Identifier(self.schema, self.name + suffix)
        return sql.Identifier(self.name + suffix)

    def regclass(self, suffix: str = "") -> str:
        """The quoted name, as ``to_regclass`` reads it."""
        quoted = f'"{self.name}{suffix}"'
        return f'"{self.schema}".{quoted}' if self.schema else quoted

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


def schema_statements(table: TableName) -> list[sql.Composed]:
    """The DDL of the sink's tables and index; every statement is ``IF NOT EXISTS``."""
    names = {
        "records": table.ident(),
        "batches": table.ident("_batches"),
        "index": sql.Identifier(table.name + "_content_hash_idx"),
    }
    statements = [sql.SQL(_RECORDS_DDL).format(**names), sql.SQL(_INDEX_DDL).format(**names)]
    statements.append(sql.SQL(_BATCHES_DDL).format(**names))
    if table.schema:
        statements.insert(
            0, sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(table.schema))
        )
    return statements


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _masked(uri: str) -> str:
    """The URI without password or query, for messages and locations."""
    parts = urlsplit(uri)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = f"{userinfo.split(':', 1)[0]}@{hostport}" if at else hostport
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class PostgresSink:
    """Stores batches in ``postgresql://...[?table=[schema.]name]`` (default ``ingest_records``).

    Other query parameters go to libpq unchanged. Each thread of each process uses a
    connection of its own, opened on first use.
    """

    def __init__(self, uri: str) -> None:
        parts = urlsplit(uri)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError(f"not a PostgreSQL URI: {uri!r}")
        query = parse_qsl(parts.query, keep_blank_values=True)
        tables = [value for key, value in query if key == "table"]
        self.uri = uri
        self.table = TableName.parse(tables[-1] if tables else DEFAULT_TABLE)
        rest = [(key, value) for key, value in query if key != "table"]
        self._conninfo = urlunsplit(parts._replace(query=urlencode(rest), fragment=""))
        given = {key for key, _ in rest}
        self._defaults = {
            k: v
            for k, v in (
                ("connect_timeout", "10"),
                ("application_name", "intelgraph-ingest"),
                # COPY sends UTF-8 bytes as they are: the server must read them as UTF-8.
                ("client_encoding", "utf8"),
            )
            if k not in given
        }
        self.display = f"{_masked(uri)}?table={self.table}"
        self._local = threading.local()
        # Connections inherited through fork() belong to the parent's session: never close them.
        self._inherited: list[psycopg.Connection[Any]] = []
        self._ready = False

    def location(self, name: str) -> str:
        return f"{self.display}#{name}"

    # -- connections -------------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection[Any]:
        # No server-side prepared statements: they break behind transaction-mode poolers.
        conninfo = psycopg.conninfo.make_conninfo(self._conninfo, **self._defaults)
        return psycopg.connect(conninfo, autocommit=True, prepare_threshold=None)

    def _connection(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid != os.getpid():
            self._inherited.append(conn)
            conn = None
        if conn is None or conn.closed or conn.broken:
            conn = self._connect()
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None and self._local.pid == os.getpid():
            with contextlib.suppress(Exception):
                conn.close()

    @contextlib.contextmanager
    def _session(self, action: str) -> Iterator[psycopg.Connection[Any]]:
        """This thread's connection; connection-level failures become a retryable SinkError."""
        try:
            yield self._connection()
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._drop_connection()
            raise SinkError(f"PostgreSQL sink {self.display}: {action} failed: {exc}") from exc

    # -- tables ------------------------------------------------------------------------------
    def _tables_present(self, conn: psycopg.Connection[Any]) -> bool:
        names = [self.table.regclass(s) for s in ("", "_batches", "_content_hash_idx")]
        row = conn.execute(
            "SELECT bool_and(to_regclass(n) IS NOT NULL) FROM unnest(%s::text[]) AS n", [names]
        ).fetchone()
        return bool(row and row[0])

    def create_tables(self) -> bool:
        """Create the tables and index where missing; True when anything had to be created."""
        with self._session("create tables") as conn:
            # Checked first: CREATE INDEX IF NOT EXISTS would wait for running writes.
            if self._tables_present(conn):
                self._ready = True
                return False
            with conn.transaction():
                # Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog.
                lock = f"ingest-sink:{self.table}"
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [lock])
                for statement in schema_statements(self.table):
                    conn.execute(statement)
        self._ready = True
        return True

    def _ensure_tables(self) -> None:
        if not self._ready:
            self.create_tables()

    # -- writes ------------------------------------------------------------------------------
    def write_records(self, name: str, records: Sequence[dict[str, Any]]) -> WriteResult:
        def load(cursor: psycopg.Cursor[Any]) -> None:
            with cursor.copy("COPY ingest_staging FROM STDIN") as copy:
                for ordinal, record in enumerate(records):
                    copy.write_row((ordinal, _dumps(record["data"]), _dumps(record["provenance"])))

        return self._write(name, len(records), load)

    def write_table(self, name: str, table: pa.Table) -> WriteResult:
        missing = {"data", "provenance"} - set(table.column_names)
        if missing:
            raise ValueError(f"a sink table needs struct columns data and provenance: {missing}")

        def load(cursor: psycopg.Cursor[Any]) -> None:
            data, provenance = table.column("data"), table.column("provenance")
            with cursor.copy(f"COPY ingest_staging FROM STDIN ({COPY_CSV_OPTIONS})") as copy:
                for chunk in copy_chunks(data, provenance, _COPY_ROWS):
                    copy.write(chunk)

        return self._write(name, table.num_rows, load)

    def _write(
        self, name: str, count: int, load: Callable[[psycopg.Cursor[Any]], None]
    ) -> WriteResult:
        if not name or "\x00" in name:
            raise ValueError(f"invalid batch name: {name!r}")
        self._ensure_tables()
        location = self.location(name)
        with self._session(f"write {name}") as conn, conn.transaction():
            if self._batch_exists(conn, name):  # a redelivery: skip the COPY altogether
                return WriteResult(location, 0, count)
            conn.execute("SET LOCAL timezone = 'UTC'")
            conn.execute(_STAGING_DDL)
            with conn.cursor() as cursor:
                load(cursor)
            # A concurrent writer of the same batch waits here until the first one commits.
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (batch_name, record_count) VALUES (%s, %s) "
                    "ON CONFLICT (batch_name) DO NOTHING"
                ).format(self.table.ident("_batches")),
                [name, count],
            )
            merge = sql.SQL(_MERGE).format(records=self.table.ident())
            new = conn.execute(merge, {"name": name, "calendar": _CALENDAR_TIME}).rowcount
        return WriteResult(location, new, count - new)

    # -- reads -------------------------------------------------------------------------------
    def _batch_exists(self, conn: psycopg.Connection[Any], name: str) -> bool:
        query = sql.SQL("SELECT 1 FROM {} WHERE batch_name = %s").format(
            self.table.ident("_batches")
        )
        return conn.execute(query, [name]).fetchone() is not None

    def exists(self, name: str) -> bool:
        self._ensure_tables()
        with self._session(f"look up {name}") as conn:
            return self._batch_exists(conn, name)

    def check(self) -> None:
        # A connection of its own, closed at once: a health probe runs in request greenlets,
        # where thread-local connections would pile up, and it should test a fresh connect.
        try:
            with self._connect() as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise SinkError(f"PostgreSQL sink {self.display}: check failed: {exc}") from exc
        if row and row[0]:
            raise SinkError(f"PostgreSQL sink {self.display} is a read-only standby")

    def iter_records(self) -> Iterator[StoredRecord]:
        try:
            yield from self._scan()
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise SinkError(f"PostgreSQL sink {self.display}: read failed: {exc}") from exc

    def _scan(self) -> Iterator[StoredRecord]:
        # A connection of its own: the caller may write while it reads.
        with self._connect() as conn:
            found = conn.execute("SELECT to_regclass(%s)", [self.table.regclass()]).fetchone()
            if not found or found[0] is None:
                return
            query = sql.SQL(
                "SELECT batch_name, ordinal, data, provenance FROM {} ORDER BY batch_name, ordinal"
            ).format(self.table.ident())
            with conn.transaction(), conn.cursor(name="ingest_records_scan") as cursor:
                cursor.itersize = 2000
                cursor.execute(query)
                for batch_name, ordinal, data, provenance in cursor:
                    yield StoredRecord(
                        f"{self.location(batch_name)}/{ordinal}",
                        {"data": data, "provenance": provenance},
                    )
