"""Schema names known without pandera: the same names the full registry loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.schemas import SchemaLoadError, SchemaNames, SchemaRegistry
from ingest.schemas.names import _python_names

ENTITIES_LIKE = "schema_type: dataframe\ncolumns:\n  id:\n    dtype: str\n"


def test_the_bundled_names_are_the_registrys() -> None:
    names = SchemaNames.load()
    assert names.names() == SchemaRegistry.load().names()
    assert "entities" in names and "contacts" in names and "webhook_event" not in names
    assert not names.open


def test_an_extra_directory_adds_its_files_and_skips_json_schemas(tmp_path: Path) -> None:
    (tmp_path / "orders.yaml").write_text(ENTITIES_LIKE)
    (tmp_path / "event.json").write_text('{"$schema": "x", "properties": {}}')
    names = SchemaNames.load(tmp_path)
    assert "orders" in names and "event" not in names
    assert names.names() == SchemaRegistry.load(tmp_path).names()


def test_a_missing_extra_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SchemaLoadError, match="does not exist"):
        SchemaNames.load(tmp_path / "nowhere")


def test_python_schemas_are_read_from_the_source(tmp_path: Path) -> None:
    (tmp_path / "__init__.py").write_text('SCHEMAS = {"a": object(), "b": object()}\n')
    (tmp_path / "people.py").write_text("SCHEMA = make()\n")
    (tmp_path / "models.py").write_text("class SCHEMA(DataFrameModel):\n    pass\n")
    (tmp_path / "_private.py").write_text("SCHEMA = make()\n")
    assert _python_names(tmp_path) == ({"a", "b", "people", "models"}, True)


def test_keys_that_need_running_code_accept_every_name(tmp_path: Path) -> None:
    (tmp_path / "generated.py").write_text("SCHEMAS = {name: make(name) for name in NAMES}\n")
    found, complete = _python_names(tmp_path)
    assert (found, complete) == (set(), False)
    assert "anything" in SchemaNames(found, open_=not complete)
    assert "anything" not in SchemaNames(found)
