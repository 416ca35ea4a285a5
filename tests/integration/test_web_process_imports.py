"""The web process loads no CSV machinery: no pandas, pyarrow, pandera, polars nor task module.

A fresh interpreter imports ``webapp.wsgi`` (what gunicorn serves), starts an import through
``POST /admin/imports``, accepts a webhook event and serves ``/metrics``; then it reports which
of those modules it loaded. Only a fresh process can tell: the test session itself has loaded
them all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("pandas", "pyarrow", "pandera", "polars", "numpy")
TASK_MODULES = ("tasks.app", "tasks.registry", "tasks.s3", "tasks.dlq", "tasks.webhooks")

PROBE = """
import json, sys
import webapp.wsgi

watched = json.loads(sys.argv[1])

client = webapp.wsgi.app.test_client()
auth = {"Authorization": "Bearer probe-token"}
answers = {
    "import": client.post(
        "/admin/imports",
        json={"uri": "s3://lake/in/", "schema": "entities", "purpose": "probe"},
        headers=auth,
    ).status_code,
    "unknown schema": client.post(
        "/admin/imports",
        json={"uri": "s3://lake/in/", "schema": "nope", "purpose": "probe"},
        headers=auth,
    ).status_code,
    "webhook": client.post("/v1/webhooks/open", json={"id": "e1", "kind": "probe"}).status_code,
    "metrics": client.get("/metrics").status_code,
}
loaded = sorted(m for m in sys.modules if m in watched or m.split(".")[0] in watched)
print(json.dumps({"answers": answers, "loaded": loaded}))
"""


def test_the_web_process_imports_no_dataframe_library(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **os.environ,
        **stack_env,
        "INGEST_ADMIN_TOKEN": "probe-token",
        "INGEST_HTTP__SOURCES": json.dumps(
            {"open": {"signature": {"scheme": "none"}, "purpose": "probe"}}
        ),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps([*HEAVY, *TASK_MODULES])],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["answers"] == {
        "import": 202,
        "unknown schema": 400,
        "webhook": 202,
        "metrics": 200,
    }
    assert report["loaded"] == []
