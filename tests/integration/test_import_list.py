"""The list of imports: newest first, filtered by status or watch, bad filters answered 400."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from cli.main import main as cli
from ingest.config import load_settings
from ingest.s3csv.imports import ImportRequest, ImportStore
from webapp import create_app

pytestmark = pytest.mark.integration
AUTH = {"Authorization": "Bearer test-admin-token"}


def add_import(store: ImportStore, at: float, status: str, watch: str | None = None) -> str:
    request = ImportRequest(uri=f"s3://lake/{status}/", schema="entities", purpose="p")
    import_id = store.create(request, "test")
    if status != "queued":
        store.finish(import_id, status)  # type: ignore[arg-type]
    if watch:
        store.client.hset(store.key(import_id), mapping={"watch": watch, "notification": "{}"})
    store.index(import_id, watch=watch, at=at)
    return import_id


@pytest.fixture()
def imports(redis_client: Any) -> dict[str, str]:
    store = ImportStore(redis_client)
    return {
        "old": add_import(store, 1000.0, "succeeded"),
        "watched": add_import(store, 2000.0, "failed", watch="drops"),
        "new": add_import(store, 3000.0, "queued"),
    }


def ids(answer: Any) -> list[str]:
    return [s["importId"] for s in answer.get_json()]


class TestAdminList:
    def test_newest_first(self, stack_env: dict[str, str], imports: dict[str, str]) -> None:
        answer = (
            create_app(load_settings(stack_env)).test_client().get("/admin/imports", headers=AUTH)
        )
        assert answer.status_code == 200
        assert ids(answer) == [imports["new"], imports["watched"], imports["old"]]

    @pytest.mark.parametrize(
        "query,expected",
        [
            ("status=failed", ["watched"]),
            ("status=succeeded", ["old"]),
            ("watch=drops", ["watched"]),
            ("watch=drops&status=queued", []),
            ("limit=2", ["new", "watched"]),
            ("status=&watch=&limit=", ["new", "watched", "old"]),
        ],
    )
    def test_filters(
        self, stack_env: dict[str, str], imports: dict[str, str], query: str, expected: list[str]
    ) -> None:
        c = create_app(load_settings(stack_env)).test_client()
        answer = c.get(f"/admin/imports?{query}", headers=AUTH)
        assert ids(answer) == [imports[name] for name in expected]

    def test_a_watch_import_shows_its_watch(
        self, stack_env: dict[str, str], imports: dict[str, str]
    ) -> None:
        c = create_app(load_settings(stack_env)).test_client()
        (state,) = c.get("/admin/imports?watch=drops", headers=AUTH).get_json()
        assert state["watch"] == "drops" and state["notification"]["objects"] == []

    @pytest.mark.parametrize(
        "query,fragment",
        [
            ("status=done", "status must be one of queued, running, succeeded, failed"),
            ("limit=0", "limit must be a whole number from 1 to 1000"),
            ("limit=many", "limit must be"),
            ("limit=100000", "limit must be"),
            ("watch=../../etc", "watch must be"),
        ],
    )
    def test_bad_filters_are_400(
        self, stack_env: dict[str, str], query: str, fragment: str
    ) -> None:
        answer = (
            create_app(load_settings(stack_env))
            .test_client()
            .get(f"/admin/imports?{query}", headers=AUTH)
        )
        assert answer.status_code == 400 and fragment in answer.get_json()["error"]

    def test_an_import_started_through_the_api_is_listed(self, stack_env: dict[str, str]) -> None:
        c = create_app(load_settings(stack_env)).test_client()
        body = {"uri": "s3://lake/x/", "schema": "entities", "purpose": "p"}
        started = c.post("/admin/imports", json=body, headers=AUTH).get_json()["importId"]
        assert ids(c.get("/admin/imports?status=queued", headers=AUTH))[0] == started

    def test_the_list_needs_the_token(self, stack_env: dict[str, str]) -> None:
        answer = create_app(load_settings(stack_env)).test_client().get("/admin/imports")
        assert answer.status_code == 401


class TestCliList:
    def test_json_newest_first(self, stack_env: dict[str, str], imports: dict[str, str]) -> None:
        result = CliRunner().invoke(cli, ["imports", "list", "--json"], env=stack_env)
        assert result.exit_code == 0, result.output
        listed = [s["importId"] for s in json.loads(result.output)]
        assert listed == [imports["new"], imports["watched"], imports["old"]]

    def test_filters(self, stack_env: dict[str, str], imports: dict[str, str]) -> None:
        args = ["imports", "list", "--status", "failed", "--watch", "drops"]
        result = CliRunner().invoke(cli, args, env=stack_env)
        assert result.exit_code == 0 and imports["watched"] in result.output
        assert imports["old"] not in result.output and "watch=drops" in result.output

    def test_a_bad_status_is_a_usage_error(self, stack_env: dict[str, str]) -> None:
        result = CliRunner().invoke(cli, ["imports", "list", "--status", "done"], env=stack_env)
        assert result.exit_code == 2 and "status must be one of" in result.output
