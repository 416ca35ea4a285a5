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
    from ingest.runtime import Runtime
    from ingest.sinks import SinkError
    from ingest.verify import records_at, verify_records

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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
