"""IntelGraph's bundled CSV schemas: pandera YAML/JSON files in this directory, each named by its
file stem, and pandera schemas written in Python in this package, found by :func:`python_schemas`.

Python schemas are discovered in the modules of this package, in name order, skipping modules
whose name starts with ``_``:

- a module ``schemas/<name>.py`` that defines ``SCHEMA`` (a ``DataFrameSchema`` or a
  ``DataFrameModel`` class) provides the schema ``<name>``, as a file ``<name>.yaml`` would;
- any module, this one included, may define ``SCHEMAS = {"name": DataFrameSchema(...), ...}``
  to provide several schemas under names of its choosing.

``schemas/contacts.py`` is the example. The IntelGraph options go in the schema's ``metadata``
exactly as in a YAML file (see docs/schemas.md)::

    SCHEMA = DataFrameSchema({...}, metadata={"ingest": {"version": "1", "keyFields": ["email"]}})

A name defined twice in this package is an error; ``ingest.schemas.SchemaRegistry`` loads
these together with the files and lets an extra schema directory override them.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandera loads with the first schema: reading this package's files is free
    from pandera.api.pandas.container import DataFrameSchema

__all__ = ["SCHEMAS", "python_schemas"]

# Schemas defined right here; empty: the bundled ones are files and modules.
SCHEMAS: dict[str, DataFrameSchema] = {}


def python_schemas() -> dict[str, DataFrameSchema]:
    """Every Python-defined schema of this package by name; ``ValueError`` names a bad module."""
    found: dict[str, tuple[DataFrameSchema, str]] = {}
    _collect(found, SCHEMAS, __name__)
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        origin = f"{__name__}.{module_info.name}"
        try:
            module = importlib.import_module(origin)
        except Exception as exc:  # any error in a schema module must name that module
            raise ValueError(f"{origin}: cannot import: {exc}") from exc
        if hasattr(module, "SCHEMA"):
            _collect(found, {module_info.name: module.SCHEMA}, origin)
        _collect(found, getattr(module, "SCHEMAS", {}), origin)
    return {name: schema for name, (schema, _) in found.items()}


def _collect(found: dict[str, tuple[DataFrameSchema, str]], offered: Any, origin: str) -> None:
    from pandera.api.pandas.container import DataFrameSchema
    from pandera.api.pandas.model import DataFrameModel

    if not isinstance(offered, dict):
        raise ValueError(f"{origin}: SCHEMAS must be a dict of name to DataFrameSchema")
    for name, schema in offered.items():
        if isinstance(schema, type) and issubclass(schema, DataFrameModel):
            schema = schema.to_schema()
        if not isinstance(schema, DataFrameSchema):
            raise ValueError(
                f"{origin}: schema {name!r} is a {type(schema).__name__}, "
                "not a pandera DataFrameSchema"
            )
        if name in found:
            raise ValueError(f"{origin}: schema {name!r} is also defined by {found[name][1]}")
        found[str(name)] = (schema, origin)
