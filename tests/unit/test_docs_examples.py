"""The Python examples of docs/sdk.md run as written, in order, in one namespace."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

SDK_GUIDE = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def python_blocks(path: Path) -> list[str]:
    """The ```python blocks of a Markdown file, in order."""
    return PYTHON_BLOCK.findall(path.read_text(encoding="utf-8"))


class TestSdkGuide:
    def test_the_guide_has_examples(self) -> None:
        assert len(python_blocks(SDK_GUIDE)) >= 6

    def test_every_example_runs_in_order(
        self, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The examples make their files with tempfile; keep them under this test's directory.
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        namespace: dict[str, object] = {"__name__": "sdk_guide", "REDIS_URL": redis_url}
        for number, block in enumerate(python_blocks(SDK_GUIDE), 1):
            code = compile(block, f"{SDK_GUIDE.name} block {number}", "exec")
            exec(code, namespace)
