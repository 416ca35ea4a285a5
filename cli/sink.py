"""``ingest sink init``: prepare the configured sink: a database's tables, or a directory."""

from __future__ import annotations

from typing import Any

import click

__all__ = ["sink_group"]


def _cli() -> Any:
    from cli import main

    return main


@click.group("sink")
def sink_group() -> None:
    """The sink stored records go to (INGEST_SINK_URI)."""


@sink_group.command("init")
@click.option("--uri", default=None, help="Sink URI; default: the configured INGEST_SINK_URI.")
@click.option(
    "--sql", "print_sql", is_flag=True, help="PostgreSQL: print the DDL instead of running it."
)
def sink_init(uri: str | None, print_sql: bool) -> None:
    """Create the sink's tables and index, or its directory; harmless when they exist."""
    import psycopg

    from ingest.sinks import SinkError, open_sink
    from ingest.sinks.postgres import PostgresSink, schema_statements

    cli = _cli()
    target = uri or cli.settings_or_exit().sink_uri
    s3 = cli._runtime().s3 if target.startswith("s3://") else None
    try:
        sink = open_sink(target, s3_client=s3)
    except ValueError as exc:
        cli.fail(str(exc), 2)
    if print_sql:
        if not isinstance(sink, PostgresSink):
            cli.fail("--sql applies to a postgresql:// sink only", 2)
            return
        for statement in schema_statements(sink.table):
            click.echo(statement.as_string(None).strip() + ";")
        return
    try:
        if isinstance(sink, PostgresSink):
            created = sink.create_tables()
            state = "created" if created else "already present"
            click.echo(f"{sink.display}: tables {sink.table} and {sink.table}_batches {state}")
        else:
            # A file sink's check() creates its directory (or reaches its bucket).
            sink.check()
            click.echo(f"{target}: ready")
    except (SinkError, psycopg.Error, OSError) as exc:
        cli.fail(f"cannot initialise the sink: {exc}", 1)
