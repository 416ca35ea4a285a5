"""Optional per-source event schemas: JSON Schema files that every event of a source must satisfy.

A source names a schema with ``http.sources.<name>.eventSchema``; the file ``<name>.json``
is looked up in ``INGEST_SCHEMAS_DIR`` first, then in the bundled ``schemas`` package. A
schema that is missing or not a valid JSON Schema stops start-up with a message naming it.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

__all__ = ["EventSchema", "load_event_schema"]


class EventSchema:
    """A compiled JSON Schema; :meth:`problem` says why an event fails it, or None."""

    def __init__(self, name: str, document: dict[str, Any]) -> None:
        self.name = name
        # Formats (date-time, email...) are checked too, not just annotations.
        self.validator = Draft202012Validator(
            document, format_checker=Draft202012Validator.FORMAT_CHECKER
        )

    def problem(self, event: Any) -> str | None:
        error = next(iter(sorted(self.validator.iter_errors(event), key=lambda e: e.path)), None)
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "(the event)"
        return f"event fails schema {self.name!r} at {where}: {error.message[:300]}"


def _find(name: str, schemas_dir: str | None) -> tuple[str, str]:
    candidates = []
    if schemas_dir:
        candidates.append(Path(schemas_dir) / f"{name}.json")
    for path in candidates:
        if path.is_file():
            return str(path), path.read_text(encoding="utf-8")
    bundled = resources.files("schemas").joinpath(f"{name}.json")
    if bundled.is_file():
        return f"schemas/{name}.json", bundled.read_text(encoding="utf-8")
    raise ValueError(
        f"event schema {name!r} not found (looked for {name}.json in "
        f"{schemas_dir or 'no INGEST_SCHEMAS_DIR'} and the bundled schemas)"
    )


def load_event_schema(name: str, schemas_dir: str | None) -> EventSchema:
    """Load and check the JSON Schema ``name``; ``ValueError`` says what is wrong with it."""
    where, text = _find(name, schemas_dir)
    try:
        document = json.loads(text)
        Draft202012Validator.check_schema(document)
    except (json.JSONDecodeError, SchemaError) as exc:
        raise ValueError(f"{where}: not a valid JSON Schema: {str(exc).splitlines()[0]}") from exc
    if not isinstance(document, dict):
        raise ValueError(f"{where}: a JSON Schema must be an object")
    return EventSchema(name, document)
