"""The admin endpoints: bearer token, request validation, SSRF guard and per-IP limits."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from ingest.config import load_settings
from webapp import create_app

pytestmark = pytest.mark.integration
AUTH = {"Authorization": "Bearer test-admin-token"}


def client(env: dict[str, str], **extra: str) -> FlaskClient:
    return create_app(load_settings({**env, **extra})).test_client()


def post_import(c: FlaskClient, body: Any, headers: dict[str, str] | None = None) -> Any:
    return c.post("/admin/imports", json=body, headers=AUTH if headers is None else headers)


class TestAuth:
    def test_without_a_configured_token_admin_is_disabled(self, stack_env: dict[str, str]) -> None:
        env = {k: v for k, v in stack_env.items() if k != "INGEST_ADMIN_TOKEN"}
        answer = client(env).get("/admin/imports/x", headers=AUTH)
        assert answer.status_code == 503 and "INGEST_ADMIN_TOKEN" in answer.get_json()["error"]

    @pytest.mark.parametrize("header", ["", "Bearer wrong", "Basic dGVzdA==", "Bearer"])
    def test_wrong_or_missing_token(self, stack_env: dict[str, str], header: str) -> None:
        answer = client(stack_env).get("/admin/imports/x", headers={"Authorization": header})
        assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Bearer"


class TestImportRequests:
    @pytest.mark.parametrize(
        "uri,status",
        [
            ("http://169.254.169.254/latest/meta-data/", 400),
            ("file:///etc/passwd", 400),
            ("s3://", 400),
            ("s3://user@bucket/x", 400),
            ("https://bucket.s3.amazonaws.com/x", 400),
        ],
    )
    def test_only_s3_uris(self, stack_env: dict[str, str], uri: str, status: int) -> None:
        answer = post_import(client(stack_env), {"uri": uri, "schema": "entities", "purpose": "p"})
        assert answer.status_code == status
        assert "s3://" in answer.get_json()["error"]

    def test_bucket_outside_the_allowed_list_is_forbidden(self, stack_env: dict[str, str]) -> None:
        c = client(stack_env, INGEST_S3CSV__ALLOWED_BUCKETS='["lake"]')
        answer = post_import(c, {"uri": "s3://other/x", "schema": "entities", "purpose": "p"})
        assert answer.status_code == 403 and "allowedBuckets" in answer.get_json()["error"]

    @pytest.mark.parametrize(
        "body,fragment",
        [
            ({"uri": "s3://b/x", "purpose": "p"}, "schema"),
            ({"uri": "s3://b/x", "schema": "nope", "purpose": "p"}, "unknown schema 'nope'"),
            ({"uri": "s3://b/x", "schema": "entities"}, "purpose"),
            ({"uri": "s3://b/x", "schema": "entities", "purpose": "p", "extra": 1}, "extra"),
            ({"uri": "s3://b/x", "schema": "entities", "purpose": "p", "mapping": [1]}, "mapping"),
            ([1, 2], "JSON object"),
        ],
    )
    def test_bad_requests_are_400_with_a_reason(
        self, stack_env: dict[str, str], body: Any, fragment: str
    ) -> None:
        answer = post_import(client(stack_env), body)
        assert answer.status_code == 400 and fragment in answer.get_json()["error"]

    def test_unknown_import_is_404(self, stack_env: dict[str, str]) -> None:
        answer = client(stack_env).get("/admin/imports/does-not-exist", headers=AUTH)
        assert answer.status_code == 404

    def test_accepted_import_is_queued(self, stack_env: dict[str, str]) -> None:
        c = client(stack_env)
        answer = post_import(c, {"uri": "s3://b/x/", "schema": "entities", "purpose": "p"})
        assert answer.status_code == 202 and answer.get_json()["status"] == "queued"
        state = c.get(f"/admin/imports/{answer.get_json()['importId']}", headers=AUTH).get_json()
        assert state["status"] == "queued" and state["uri"] == "s3://b/x/"


def test_admin_endpoints_are_limited_per_client(stack_env: dict[str, str]) -> None:
    c = client(stack_env, INGEST_HTTP__ADMIN_RATE_LIMIT="3/minute")
    codes = [c.get("/admin/imports/x", headers=AUTH).status_code for _ in range(5)]
    assert codes == [404, 404, 404, 429, 429]
    limited = c.get("/admin/imports/x", headers=AUTH)
    assert "Retry-After" in limited.headers and "error" in limited.get_json()
