"""Generates the configuration reference and JSON Schemas in ``docs/`` from the models.

``python -m ingest.configdoc`` rewrites them; a test fails when they are out of date.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from ingest.config import PLAIN_ENV, Section, Settings
from ingest.provenance import provenance_json_schema

__all__ = ["generated_docs", "main"]

DOCS = Path(__file__).resolve().parent.parent / "docs"
HEADER = """# Configuration reference

Generated from `ingest/config/` by `python -m ingest.configdoc`; do not edit by hand.

Settings load in this order, later winning: built-in defaults, then the JSON file named by
`INGEST_CONFIG`, then environment variables. JSON keys are camelCase. A top-level key `fooBar`
is the variable `INGEST_FOO_BAR`; a nested key `section.fooBar` is `INGEST_SECTION__FOO_BAR`
(lists and objects as JSON). `PORT`, `FLOWER_PORT` and `SENTRY_DSN` keep their usual names.
Unknown keys and wrong types stop start-up with a message naming the key. `ingest config show`
prints the effective configuration with secrets masked; `ingest config validate FILE` checks a
file. The JSON Schema is `docs/config.schema.json`. Example files are in `config/`.

| JSON key | environment variable | type | default | meaning |
| --- | --- | --- | --- | --- |
"""


def _snake_upper(camel: str) -> str:
    return "".join(f"_{c}" if c.isupper() else c for c in camel).upper()


def _env_name(path: list[str]) -> str:
    for name, target in PLAIN_ENV.items():
        if list(target) == path:
            return name
    return "INGEST_" + "__".join(_snake_upper(p) for p in path)


def _type_name(info: FieldInfo) -> str:
    text = str(info.annotation).replace("typing.", "").replace("ingest.config.", "")
    return text.replace("<class '", "").replace("'>", "").replace("|", "\\|")


def _default(info: FieldInfo) -> str:
    if info.default is not PydanticUndefined:
        value = info.default
    elif info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    else:
        return "required"
    if isinstance(value, BaseModel):
        return "see below"
    return f"`{json.dumps(value)}`"


def _rows(model: type[BaseModel], path: list[str], dynamic: bool = False) -> list[str]:
    rows = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        here = [*path, key]
        annotation = info.annotation
        nested = (
            annotation if isinstance(annotation, type) and issubclass(annotation, Section) else None
        )
        env = "(within the map)" if dynamic else f"`{_env_name(here)}`"
        if nested is not None and key not in ("rateLimit", "globalRateLimit"):
            rows.extend(_rows(nested, here, dynamic))
            continue
        rows.append(
            f"| `{'.'.join(here)}` | {env} | {_type_name(info)} | {_default(info)} | "
            f"{info.description or ''} |"
        )
    return rows


def configuration_markdown() -> str:
    from ingest.config import RateLimitConfig, SourceConfig, WatchConfig

    rows = _rows(Settings, [])
    rows += _rows(RateLimitConfig, ["(rate limits)"])
    rows += _rows(SourceConfig, ["http", "sources", "<name>"], dynamic=True)
    rows += _rows(WatchConfig, ["s3csv", "watches[]"], dynamic=True)
    return HEADER + "\n".join(rows) + "\n" + _examples()


EXAMPLE_NOTES = {
    "seed-example.json": "The seed's example, unchanged: it must always load.",
    "local-development.json": "Local development: local Redis and S3 server, a signed and an "
    "unsigned webhook source, console logs.",
    "local-dev.json": "Local development: local Redis and S3 server, a signed and an unsigned "
    "webhook source, console logs.",
    "s3-only.json": "Bulk S3/CSV imports only, into an S3 sink, from an allowed bucket.",
    "s3-watch.json": "Continuous ingestion: a watched prefix imported from its S3 event "
    "notifications (SQS), see docs/s3-import.md.",
    "webhooks-only.json": "Webhooks only: two sources (Standard Webhooks and GitHub-style "
    "HMAC), limits and backpressure.",
    "production.json": "Production-like: shared Redis, S3 sink, bounded DLQ, JSON logs.",
}


def _examples() -> str:
    parts = [
        "\n## Examples for the common cases\n\nEach file in `config/` loads as it stands "
        "(a test checks it): `INGEST_CONFIG=config/NAME.json`.\n"
    ]
    for path in sorted((DOCS.parent / "config").glob("*.json")):
        note = EXAMPLE_NOTES.get(path.name, "")
        parts.append(
            f"\n### `config/{path.name}`\n\n{note}\n\n```json\n{path.read_text().strip()}\n```\n"
        )
    return "".join(parts)


def generated_docs() -> dict[Path, str]:
    """Every generated file and its expected text."""
    return {
        DOCS / "config.schema.json": json.dumps(Settings.model_json_schema(by_alias=True), indent=2)
        + "\n",
        DOCS / "provenance.schema.json": json.dumps(provenance_json_schema(), indent=2) + "\n",
        DOCS / "configuration.md": configuration_markdown(),
    }


def main() -> int:
    for path, text in generated_docs().items():
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
