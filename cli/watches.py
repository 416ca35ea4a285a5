"""``ingest watches`` and ``ingest imports list``: the watches' counters and the recent imports."""

from __future__ import annotations

from typing import Any, NoReturn

import click

__all__ = ["imports_list", "watches_command"]


def _cli() -> Any:
    # Late: cli.main imports this module while it is being set up (also as ``python -m``).
    from cli import main

    return main


def _runtime() -> Any:
    return _cli()._runtime()


def fail(message: str, code: int = 1) -> NoReturn:
    _cli().fail(message, code)
    raise AssertionError("unreachable")


def emit_json(value: Any) -> None:
    _cli().emit_json(value)


@click.command("watches")
@click.option("--json", "as_json", is_flag=True, help="Print the watches as JSON.")
def watches_command(as_json: bool) -> None:
    """Each watch: queue, last message time, imports started, messages refused, lag."""
    from ingest.s3csv.watch_status import watch_overview

    rt = _runtime()
    try:
        overview = watch_overview(rt.settings, rt.redis)
    except Exception as exc:  # Redis unreachable
        fail(f"cannot read the watches' state: {exc}", 1)
    if as_json:
        emit_json(overview)
        return
    if not overview:
        click.echo("no watches configured (s3csv.watches)")
    for w in overview:
        lag = "-" if w["lagSeconds"] is None else f"{w['lagSeconds']:.1f}s"
        backlog = "-" if w["backlog"] is None else int(w["backlog"])
        click.echo(
            f"{w['name']}: s3://{w['bucket']}/{w['prefix']} <- {w['queueUrl']}\n"
            f"  last message {w['lastMessageAt'] or 'never'}, {w['importsStarted']} imports "
            f"started, {w['messagesRefused']} messages refused, {w['malformed']} malformed, "
            f"{w['duplicates']} duplicates, lag {lag}, backlog {backlog}"
        )
        if w["lastError"]:
            click.echo(f"  last error at {w['lastErrorAt']}: {w['lastError']}")


@click.command("list")
@click.option("--status", default=None, help="Only imports in this status.")
@click.option("--watch", default=None, help="Only imports this watch started.")
@click.option("--limit", default="50", help="At most this many (1 to 1000).")
@click.option("--json", "as_json", is_flag=True, help="Print the imports' states as JSON.")
def imports_list(status: str | None, watch: str | None, limit: str, as_json: bool) -> None:
    """Recent imports, newest first."""
    from ingest.s3csv.imports import ImportRequestError, ImportStore
    from ingest.s3csv.watch_status import listing_query

    try:
        status, watch, number = listing_query(status, watch, limit)
    except ImportRequestError as exc:
        fail(str(exc), 2)
    try:
        states = ImportStore(_runtime().redis).list_recent(status, watch, number)
    except Exception as exc:  # Redis unreachable
        fail(f"cannot list imports: {exc}", 1)
    if as_json:
        emit_json(states)
        return
    for s in states:
        origin = f" watch={s['watch']}" if s.get("watch") else ""
        click.echo(
            f"{s['importId']} {s['status']:<9} {s.get('startedAt') or '-'} {s['uri']}{origin} "
            f"{s['objects']} objects, {s['rowsStored']} stored, {s['rowsRejected']} rejected"
        )
