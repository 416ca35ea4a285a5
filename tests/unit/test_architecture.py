"""The core stays framework-free: nothing under ``ingest/`` imports a web or task framework.

``webapp/`` and ``tasks/`` adapt requests and task messages to the core; the core must run in a
notebook or another job runner, so it may not depend on them or on their frameworks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("celery", "kombu", "flask", "werkzeug", "gunicorn", "gevent", "webapp", "tasks")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "ingest").rglob("*.py")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_the_core_imports_no_framework(path: Path) -> None:
    offending = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for line, name in imported_modules(path)
        if name.split(".")[0] in FORBIDDEN
    ]
    assert not offending, "\n".join(offending)


def test_the_check_sees_an_import() -> None:
    tree = ROOT / "webapp" / "fastpath.py"
    assert any(name == "flask" for _, name in imported_modules(tree))
