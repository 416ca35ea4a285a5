"""The generated configuration reference and JSON Schemas in docs/ match the code."""

from __future__ import annotations

import pytest

from ingest.configdoc import generated_docs


@pytest.mark.parametrize(
    "path,text", sorted(generated_docs().items()), ids=lambda v: getattr(v, "name", "")
)
def test_generated_doc_is_current(path: object, text: str) -> None:
    from pathlib import Path

    assert isinstance(path, Path)
    assert path.exists(), f"{path} is missing: run python -m ingest.configdoc"
    assert path.read_text() == text, f"{path} is out of date: run python -m ingest.configdoc"
