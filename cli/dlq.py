"""``ingest dlq list|show|retry|purge``: inspect, replay and delete dead-letter entries."""

from __future__ import annotations

import json
from typing import Any

import click

__all__ = ["dlq_group"]

KINDS = click.Choice(["task", "row", "event"])


def _cli() -> Any:
    from cli import main

    return main


def _dlq() -> Any:
    return _cli()._runtime().dlq


def entry_summary(entry: Any) -> dict[str, Any]:
    """The columns of ``dlq list`` (``DeadLetterEntry.summary``)."""
    return dict(entry.summary())


@click.group("dlq")
def dlq_group() -> None:
    """The dead-letter queue: everything that could not be processed."""


@dlq_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--kind", type=KINDS, default=None, help="Only entries of this kind.")
@click.option(
    "--source", default=None, help="Only entries of this source (s3://... or webhook:NAME)."
)
@click.option("--import-id", default=None, help="Only entries of this import.")
def dlq_list(
    as_json: bool, limit: int, kind: str | None, source: str | None, import_id: str | None
) -> None:
    """List entries, oldest first."""
    dlq = _dlq()
    entries = [
        entry_summary(e)
        for e in dlq.list(limit=limit, kind=kind, source=source, import_id=import_id)
    ]
    if as_json:
        _cli().emit_json({"depth": dlq.depth(), "entries": entries})
        return
    for e in entries:
        click.echo(
            f"{e['id']}  {e['kind']:<5}  attempts={e['attempts']}  {e['lastFailedAt']}  "
            f"{e['source']}  {e['reason']}"
        )
    click.echo(f"{len(entries)} shown, {dlq.depth()} in the DLQ")


@dlq_group.command("show")
@click.argument("entry_id")
def dlq_show(entry_id: str) -> None:
    """One entry in full, payload included, as JSON."""
    entry = _dlq().get(entry_id)
    if entry is None:
        _cli().fail(f"no DLQ entry {entry_id!r}", 1)
    click.echo(json.dumps(json.loads(entry.to_json()), indent=2))


def _select(ids: tuple[str, ...], all_: bool) -> None:
    if bool(ids) == all_:
        _cli().fail("give entry ids or --all (not both)", 2)


@dlq_group.command("retry")
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every entry (narrowed by the filters).")
@click.option("--kind", type=KINDS, default=None)
@click.option("--source", default=None)
@click.option("--import-id", default=None)
@click.option("--no-wait", is_flag=True, help="Enqueue the retries and return at once.")
@click.option(
    "--timeout",
    default=300,
    show_default=True,
    type=int,
    help="Seconds to wait for the retries to finish.",
)
@click.option("--json", "as_json", is_flag=True)
def dlq_retry(
    ids: tuple[str, ...],
    all_: bool,
    kind: str | None,
    source: str | None,
    import_id: str | None,
    no_wait: bool,
    timeout: int,
    as_json: bool,
) -> None:
    """Send entries back through processing; an entry leaves only when its retry succeeds."""
    from tasks.dlq_replay import retry_entries

    _select(ids, all_)
    rt = _cli()._runtime()
    try:
        report = retry_entries(
            rt,
            ids=list(ids) or None,
            kind=kind,
            source=source,
            import_id=import_id,
            wait=not no_wait,
            timeout=timeout,
        )
    except LookupError as exc:
        _cli().fail(str(exc), 1)
    if as_json:
        _cli().emit_json(report)
    else:
        click.echo(
            f"{report['submitted']} retried: {report['succeeded']} succeeded, "
            f"{report['failed']} failed, {report['pending']} pending, "
            f"{report['skipped']} skipped (being retried elsewhere); "
            f"{report['depth']} left in the DLQ"
        )
    if report["failed"] or report["pending"]:
        _cli().fail(f"{report['failed'] + report['pending']} entries did not retry successfully", 1)


@dlq_group.command("purge")
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every entry (narrowed by the filters).")
@click.option("--kind", type=KINDS, default=None)
@click.option("--source", default=None)
@click.option("--yes", is_flag=True, help="Confirm: purged entries are gone for good.")
def dlq_purge(
    ids: tuple[str, ...], all_: bool, kind: str | None, source: str | None, yes: bool
) -> None:
    """Delete entries (requires --yes)."""
    _select(ids, all_)
    if not yes:
        _cli().fail("purge deletes entries for good: add --yes", 2)
    removed = _dlq().purge(ids=list(ids) or None, kind=kind, source=source)
    if ids and removed < len(ids):
        _cli().fail(f"purged {removed} of {len(ids)}: some ids are not in the DLQ", 1)
    click.echo(f"purged {removed} entries")


@dlq_group.command("export")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
def dlq_export(file: str) -> None:
    """Write every entry to FILE as JSON lines (a backup; '-' is standard output)."""
    with click.open_file(file, "w") as out:
        count = _dlq().export(out)
    click.echo(f"exported {count} entries", err=file == "-")


@dlq_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
def dlq_import(file: str) -> None:
    """Add the entries of a JSON-lines backup; ids already present are skipped."""
    with click.open_file(file) as source:
        count = _dlq().import_(source)
    click.echo(f"imported {count} entries")
