"""The layers hold: import-linter's contracts in setup.cfg (``[importlinter]``) are kept.

- ``cli | webapp`` over ``tasks`` over ``ingest``: the core imports none of the adapters;
- the core (``ingest/``) imports no web or task framework (celery, kombu, flask, werkzeug,
  gunicorn, gevent), so it runs a CSV through validation and provenance in a notebook or
  another job runner;
- the web and the CLI send tasks by name and load no task module.

``tests/integration/test_web_process_imports.py`` checks what a static graph cannot: that the
web process loads no pandas, pyarrow or pandera (the core imports them inside functions).
"""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(config)],
        cwd=cwd,
        env={"PYTHONPATH": str(cwd), "PATH": str(LINT_IMPORTS.parent)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_import_contract_is_kept() -> None:
    done = lint_imports(ROOT, ROOT / "setup.cfg")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_the_core_contract_sees_a_framework_import(tmp_path: Path) -> None:
    # The project's own contract, pointed at a core that imports werkzeug through a module.
    ours = configparser.ConfigParser()
    ours.read(ROOT / "setup.cfg")
    contract = dict(ours["importlinter:contract:core-framework-free"])
    (tmp_path / "core_probe").mkdir()
    (tmp_path / "core_probe" / "__init__.py").write_text("")
    (tmp_path / "core_probe" / "fine.py").write_text("import json\n")
    (tmp_path / "core_probe" / "helper.py").write_text("from werkzeug import Request\n")
    (tmp_path / "core_probe" / "uses_helper.py").write_text("from core_probe import helper\n")
    probe = configparser.ConfigParser()
    probe["importlinter"] = {"root_packages": "\ncore_probe", "include_external_packages": "True"}
    probe["importlinter:contract:probe"] = {**contract, "source_modules": "\ncore_probe"}
    config = tmp_path / "probe.cfg"
    with config.open("w") as out:
        probe.write(out)
    done = lint_imports(tmp_path, config)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "core_probe.helper -> werkzeug" in done.stdout
