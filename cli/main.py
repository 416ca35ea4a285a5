"""The ``ingest`` command line: imports, the DLQ, configuration and provenance checks.

Exit status 0 on success; 1 when the thing checked or waited for failed; 2 for a usage or
configuration error. Errors are one line on standard error; ``--json`` output is JSON on stdout.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click

from ingest.config import ConfigError, Settings, build_settings, load_settings, read_config_file
from ingest.masking import masked_settings

__all__ = ["main"]


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"ingest: {message}", err=True)
    raise SystemExit(code)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        fail(str(exc), 2)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """IntelGraph ingest: bulk S3/CSV imports, webhooks, the DLQ and provenance."""
    from tasks.observability import start_tracing

    start_tracing("intelgraph-ingest-cli")  # traces the tasks it sends, when OTEL_* asks


@main.group("config")
def config_group() -> None:
    """Show or check configuration."""


@config_group.command("show")
def config_show() -> None:
    """Print the effective configuration, secrets masked."""
    emit_json(masked_settings(settings_or_exit()))


@config_group.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
def config_validate(file: str) -> None:
    """Check a JSON config FILE on its own (without the environment)."""
    try:
        build_settings(read_config_file(file), origin=file)
    except ConfigError as exc:
        fail(str(exc), 1)
    click.echo(f"{file}: valid")


@main.group("provenance")
def provenance_group() -> None:
    """Check the provenance of stored records."""


@provenance_group.command("verify")
@click.argument("path_or_uri")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def provenance_verify(path_or_uri: str, as_json: bool) -> None:
    """Check every stored record under PATH_OR_URI; exit 0 only when all hold."""
    from ingest.provenance.verify import records_at, verify_records
    from ingest.runtime import Runtime
    from ingest.sinks import SinkError

    s3 = Runtime(settings_or_exit()).s3 if path_or_uri.startswith("s3://") else None
    try:
        report = verify_records(records_at(path_or_uri, s3_client=s3))
    except (FileNotFoundError, SinkError, ValueError) as exc:
        fail(str(exc), 2)
    if as_json:
        emit_json(
            {
                "ok": report.ok,
                "records": report.records,
                "problems": report.problems,
                "hashesRecomputed": report.hashes_recomputed,
                "details": report.details,
            }
        )
    else:
        for line in report.details:
            click.echo(line)
        click.echo(
            f"{report.records} records checked, {report.hashes_recomputed} hashes "
            f"recomputed, {report.problems} problems"
        )
    if report.records == 0:
        fail(f"no stored records found at {path_or_uri}", 1)
    if not report.ok:
        fail(f"{report.problems} provenance problems found", 1)


def _runtime() -> Any:
    from ingest.runtime import Runtime

    return Runtime(settings_or_exit())


def _print_state(state: dict[str, Any]) -> None:
    ranges = state.get("ranges", {})
    click.echo(
        f"import {state['importId']} {state['status']}: {state['objects']} objects, "
        f"{state['bytesProcessed']}/{state['bytesTotal']} bytes, "
        f"ranges {ranges.get('done', 0)} done, {ranges.get('failed', 0)} failed "
        f"of {ranges.get('total', 0)}, "
        f"{state['rowsStored']} stored, {state['rowsRejected']} rejected, "
        f"{state['duplicatesDropped']} duplicates"
    )
    for error in state.get("errors", []):
        click.echo(f"  error: {error}")


@main.command("import")
@click.argument("uri")
@click.option("--schema", "schema", required=True, help="CSV schema name.")
@click.option("--purpose", required=True, help="Why the data is ingested (provenance).")
@click.option("--classification", default=None, help="Classification (provenance).")
@click.option(
    "--mapping", default=None, help='JSON object: CSV header -> column, e.g. {"Id":"id"}.'
)
@click.option("--wait", is_flag=True, help="Show progress; exit 0 only if the import succeeded.")
@click.option("--timeout", default=0, type=int, help="With --wait: give up after N seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the final state as JSON.")
def import_command(
    uri: str,
    schema: str,
    purpose: str,
    classification: str | None,
    mapping: str | None,
    wait: bool,
    timeout: int,
    as_json: bool,
) -> None:
    """Import every CSV under s3://bucket/prefix (the same path as POST /admin/imports)."""
    import getpass
    import socket
    import time

    from ingest.s3csv.imports import ImportRequestError, ImportStore
    from tasks.imports import submit_import

    try:
        mapping_value = json.loads(mapping) if mapping else {}
    except json.JSONDecodeError as exc:
        fail(f"--mapping is not JSON: {exc.msg}", 2)
    rt = _runtime()
    payload = {
        "uri": uri,
        "schema": schema,
        "purpose": purpose,
        "classification": classification,
        "mapping": mapping_value,
    }
    actor = f"cli:{getpass.getuser()}@{socket.gethostname()}"
    try:
        import_id = submit_import(rt.settings, rt.redis, rt.schema_names, payload, actor)
    except ImportRequestError as exc:
        fail(str(exc), 2)
    except Exception as exc:  # Redis or broker unreachable
        fail(f"cannot start the import: {exc}", 1)
    if not wait:
        emit_json({"importId": import_id, "status": "queued"}) if as_json else click.echo(import_id)
        return
    store = ImportStore(rt.redis)
    started = time.monotonic()
    last = ""
    while True:
        state = store.get(import_id) or {}
        line = json.dumps({k: state.get(k) for k in ("status", "bytesProcessed", "rowsStored")})
        if line != last and not as_json:
            _print_state(state)
            last = line
        if state.get("status") in ("succeeded", "failed"):
            break
        if timeout and time.monotonic() - started > timeout:
            fail(f"import {import_id} still {state.get('status')} after {timeout}s", 1)
        time.sleep(0.5)
    if as_json:
        emit_json(state)
    if state["status"] != "succeeded":
        fail(f"import {import_id} failed", 1)


@main.group("imports")
def imports_group() -> None:
    """Inspect imports."""


@imports_group.command("show")
@click.argument("import_id")
@click.option("--json", "as_json", is_flag=True)
def imports_show(import_id: str, as_json: bool) -> None:
    """An import's state and counters."""
    from ingest.s3csv.imports import ImportStore

    state = ImportStore(_runtime().redis).get(import_id)
    if state is None:
        fail(f"no import {import_id!r}", 1)
    if as_json:
        emit_json(state)
    else:
        _print_state(state)


def _register_subcommands() -> None:
    from cli.dlq import dlq_group
    from cli.sink import sink_group
    from cli.watches import imports_list, watches_command

    main.add_command(dlq_group)
    main.add_command(sink_group)
    main.add_command(watches_command)
    imports_group.add_command(imports_list)


_register_subcommands()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
