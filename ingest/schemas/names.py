"""The names of the CSV schemas, known without loading any schema (nor pandera, nor pandas).

The web process checks an import request's schema name against these and never validates a
row, so it must not pay for pandera. The names come from the same places as
:class:`~ingest.schemas.registry.SchemaRegistry`'s schemas: the files of the bundled ``schemas``
package and of ``extra_dir`` (JSON Schema documents skipped), and the Python schemas of the
bundled package, read from its source (``SCHEMA`` in ``schemas/<name>.py``, the keys of a
``SCHEMAS = {...}`` dict). A ``SCHEMAS`` whose keys cannot be read without running the module
(not a dict display of string keys) makes the names *open*: every name is accepted here, and
the worker's scan refuses an unknown one.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from ingest.schemas.options import SchemaLoadError

__all__ = ["BUNDLED_PACKAGE", "SCHEMA_SUFFIXES", "SchemaNames", "read_document", "schema_files"]

SCHEMA_SUFFIXES = (".yaml", ".yml", ".json")
BUNDLED_PACKAGE = "schemas"


class SchemaNames:
    """The schema names this deployment knows; ``name in names`` and ``names.names()``."""

    def __init__(self, names: Iterable[str], *, open_: bool = False) -> None:
        self._names = sorted(set(names))
        self.open = open_

    @classmethod
    def load(cls, extra_dir: Path | str | None = None) -> SchemaNames:
        """The bundled schemas' names, and those of ``extra_dir``'s files."""
        package = resources.files(BUNDLED_PACKAGE)
        names = set(_file_names(package))
        python, complete = _python_names(package)
        names.update(python)
        if extra_dir is not None and str(extra_dir) != "":  # an empty setting means none
            directory = Path(extra_dir)
            if not directory.is_dir():
                raise SchemaLoadError(f"{directory}: schemas directory does not exist")
            names.update(_file_names(directory))
        return cls(names, open_=not complete)

    def names(self) -> list[str]:
        """The known schema names, sorted."""
        return list(self._names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (self.open or name in self._names)

    def __len__(self) -> int:
        return len(self._names)


def schema_files(entries: Iterable[Traversable]) -> list[Traversable]:
    """The schema files among ``entries`` (``.yaml``, ``.yml``, ``.json``; not hidden), by name."""
    files = [
        entry
        for entry in entries
        if entry.is_file()
        and entry.name.endswith(SCHEMA_SUFFIXES)
        and not entry.name.startswith(".")
    ]
    return sorted(files, key=lambda entry: entry.name)


def read_document(path: Path | Traversable) -> dict[str, Any] | None:
    """The parsed file; None for a JSON Schema (webhook event schemas may share the directory)."""
    try:
        text = path.read_text(encoding="utf-8")
        document = json.loads(text) if path.name.endswith(".json") else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise SchemaLoadError(f"{path}: cannot read the schema: {exc}") from exc
    if not isinstance(document, dict):
        raise SchemaLoadError(
            f"{path}: a schema must be a mapping, found {type(document).__name__}"
        )
    if "$schema" in document or ("properties" in document and "columns" not in document):
        return None
    return document


def _file_names(directory: Path | Traversable) -> Iterator[str]:
    for path in schema_files(directory.iterdir()):
        if read_document(path) is not None:
            yield Path(path.name).stem


def _python_names(package: Traversable) -> tuple[set[str], bool]:
    """Names the package's Python modules define, and whether every one could be read."""
    names: set[str] = set()
    complete = True
    for entry in sorted(package.iterdir(), key=lambda e: e.name):
        module = entry.name.removesuffix(".py")
        if not entry.is_file() or not entry.name.endswith(".py"):
            continue
        if module.startswith("_") and module != "__init__":
            continue
        try:
            tree = ast.parse(entry.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            complete = False  # the worker's import names the problem
            continue
        for target, value in _top_level_assignments(tree):
            if target == "SCHEMA" and module != "__init__":
                names.add(module)
            elif target == "SCHEMAS":
                keys = _literal_keys(value)
                if keys is None:
                    complete = False
                else:
                    names.update(keys)
    return names, complete


def _top_level_assignments(tree: ast.Module) -> Iterator[tuple[str, ast.expr | None]]:
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    yield target.id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            yield node.target.id, node.value
        elif isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and (
            node.name in ("SCHEMA", "SCHEMAS")  # a class SCHEMA(DataFrameModel)
        ):
            yield node.name, None


def _literal_keys(value: ast.expr | None) -> list[str] | None:
    if not isinstance(value, ast.Dict):
        return None
    keys: list[str] = []
    for key in value.keys:
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            return None
        keys.append(key.value)
    return keys
