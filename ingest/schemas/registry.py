"""Finding CSV schemas by name: pandera YAML/JSON files in the bundled ``schemas`` package and an
optional extra directory, and ``DataFrameSchema`` objects exposed by the ``schemas`` package.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from pandera.api.checks import Check
from pandera.api.pandas.container import DataFrameSchema
from pandera.io.pandas_io import deserialize_schema

from ingest.schemas.model import CsvSchema
from ingest.schemas.names import BUNDLED_PACKAGE, SCHEMA_SUFFIXES, read_document, schema_files
from ingest.schemas.options import SchemaLoadError

__all__ = ["SCHEMA_SUFFIXES", "SchemaRegistry", "UnknownSchemaError", "load_schema_file"]

log = logging.getLogger(__name__)

# pandera's reader ignores keys it does not know, so a misspelt option or check would vanish.
SCHEMA_KEYS = frozenset(
    {
        "schema_type",
        "version",
        "api",
        "dataframe_library",
        "columns",
        "checks",
        "index",
        "multiindex",
        "dtype",
        "coerce",
        "strict",
        "name",
        "ordered",
        "unique",
        "report_duplicates",
        "unique_column_names",
        "add_missing_columns",
        "title",
        "description",
        "drop_invalid_rows",
        "metadata",
    }
)
COLUMN_KEYS = frozenset(
    {
        "title",
        "description",
        "dtype",
        "nullable",
        "checks",
        "name",
        "unique",
        "coerce",
        "required",
        "regex",
        "default",
        "report_duplicates",
        "drop_invalid_rows",
    }
)


class UnknownSchemaError(LookupError):
    """No schema has the requested name; the message lists the names there are."""


def load_schema_file(path: Path | Traversable) -> CsvSchema:
    """Load one pandera YAML or JSON schema file; its name is the file's stem."""
    name = Path(path.name).stem
    document = read_document(path)
    if document is None:
        raise SchemaLoadError(f"{path}: a JSON Schema document, not a pandera schema")
    return _from_document(name, document, str(path))


class SchemaRegistry:
    """The CSV schemas known to this process, by name."""

    def __init__(self, schemas: Mapping[str, CsvSchema]) -> None:
        self._schemas = dict(sorted(schemas.items()))

    @classmethod
    def load(cls, extra_dir: Path | str | None = None) -> SchemaRegistry:
        """Load the bundled schemas (files and Python), then ``extra_dir``'s files over them."""
        schemas = _bundled()
        if extra_dir is not None and str(extra_dir) != "":  # an empty setting means none
            directory = Path(extra_dir)
            if not directory.is_dir():
                raise SchemaLoadError(f"{directory}: schemas directory does not exist")
            for name, schema in _directory(directory).items():
                if name in schemas:
                    # Overriding is how an operator adapts a bundled schema without a release.
                    log.warning(
                        "schema %r from %s overrides %s", name, schema.source, schemas[name].source
                    )
                schemas[name] = schema
        return cls(schemas)

    def get(self, name: str) -> CsvSchema:
        """The schema called ``name``; raises :class:`UnknownSchemaError` naming the known ones."""
        try:
            return self._schemas[name]
        except KeyError:
            known = ", ".join(self._schemas) or "none"
            raise UnknownSchemaError(f"unknown schema {name!r}; known schemas: {known}") from None

    def names(self) -> list[str]:
        """The known schema names, sorted."""
        return list(self._schemas)

    def __contains__(self, name: object) -> bool:
        return name in self._schemas

    def __len__(self) -> int:
        return len(self._schemas)


def _bundled() -> dict[str, CsvSchema]:
    """The schema files shipped in the ``schemas`` package, then its Python schemas."""
    package = resources.files(BUNDLED_PACKAGE)
    schemas = _directory(package)
    for name, schema in _python_schemas().items():
        if name in schemas:
            # Two bundled definitions of one name is a packaging mistake, not an override.
            raise SchemaLoadError(
                f"{schema.source}: schema {name!r} is also defined by {schemas[name].source}"
            )
        schemas[name] = schema
    return schemas


def _python_schemas() -> dict[str, CsvSchema]:
    import schemas as package  # the bundled package; imported late so a test can reload it

    try:
        found: dict[str, DataFrameSchema] = package.python_schemas()
    except ValueError as exc:
        raise SchemaLoadError(str(exc)) from exc
    return {
        name: CsvSchema.from_pandera(name, schema, f"{BUNDLED_PACKAGE} (Python): {name}")
        for name, schema in found.items()
    }


def _directory(directory: Path | Traversable) -> dict[str, CsvSchema]:
    schemas: dict[str, CsvSchema] = {}
    for path in schema_files(directory.iterdir()):
        name = Path(path.name).stem
        if name in schemas:
            raise SchemaLoadError(
                f"{path}: schema {name!r} is also defined by {schemas[name].source}"
            )
        document = read_document(path)
        if document is None:
            log.debug("skipping %s: a JSON Schema document, not a pandera schema", path)
            continue
        schemas[name] = _from_document(name, document, str(path))
    return schemas


def _from_document(name: str, document: dict[str, Any], source: str) -> CsvSchema:
    if document.get("schema_type", "dataframe") != "dataframe" or not isinstance(
        document.get("columns"), dict | list
    ):
        raise SchemaLoadError(
            f"{source}: not a pandera DataFrameSchema "
            "(expected schema_type: dataframe and a columns mapping)"
        )
    _check_keys(document, source)
    try:
        schema = deserialize_schema(document)
    except Exception as exc:  # pandera raises many kinds for a bad check, dtype or option
        raise SchemaLoadError(f"{source}: invalid pandera schema: {exc}") from exc
    return CsvSchema.from_pandera(name, schema, source)


def _check_keys(document: dict[str, Any], source: str) -> None:
    unknown = sorted(set(document) - SCHEMA_KEYS)
    if unknown:
        raise SchemaLoadError(f"{source}: unknown schema keys: {', '.join(unknown)}")
    columns = document["columns"]
    named = (
        columns.items()
        if isinstance(columns, dict)
        else ((c.get("name") if isinstance(c, dict) else None, c) for c in columns)
    )
    for name, column in named:
        if not isinstance(column, dict):
            raise SchemaLoadError(f"{source}: column {name!r} must be a mapping")
        unknown = sorted(
            key
            for key in column
            if key not in COLUMN_KEYS and not callable(getattr(Check, key, None))
        )
        if unknown:
            raise SchemaLoadError(
                f"{source}: column {name!r} has unknown keys (neither a "
                f"column option nor a check): {', '.join(unknown)}"
            )
