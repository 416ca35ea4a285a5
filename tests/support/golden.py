"""The golden fixtures (fixtures/entities/) and how a test imports them through the admin API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ingest.config import load_settings
from tests.support.services import wait_for
from webapp import create_app

__all__ = ["AUTH", "EXPECTED", "FIXTURES", "run_import", "upload_fixtures"]

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
EXPECTED = json.loads((FIXTURES / "expected" / "entities.json").read_text())
AUTH = {"Authorization": "Bearer test-admin-token"}


def upload_fixtures(s3_client: Any, bucket: str, prefix: str) -> None:
    for path in sorted((FIXTURES / "entities").iterdir()):
        s3_client.put_object(Bucket=bucket, Key=f"{prefix}{path.name}", Body=path.read_bytes())


def run_import(env: dict[str, str], uri: str, **extra: Any) -> dict[str, Any]:
    app = create_app(load_settings(env))
    client = app.test_client()
    answer = client.post(
        "/admin/imports",
        headers=AUTH,
        json={
            "uri": uri,
            "schema": "entities",
            "purpose": "golden-test",
            "classification": "test",
            **extra,
        },
    )
    assert answer.status_code == 202, answer.get_json()
    import_id = answer.get_json()["importId"]

    def finished() -> dict[str, Any] | None:
        state = client.get(f"/admin/imports/{import_id}", headers=AUTH).get_json()
        return state if state["status"] in ("succeeded", "failed") else None

    return wait_for(finished, 120, 0.2, "the import to finish")  # type: ignore[no-any-return]
