"""Hostile and careless client input against a real Redis: a clear 4xx, never a 500.

With unexpected exceptions answered 500 (a fault of the service), any 500 here is a bug in
how the service handles client input.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from ingest.config import load_settings
from tests.integration.test_webhooks_http import config
from webapp import create_app

pytestmark = pytest.mark.integration
AUTH = {"Authorization": "Bearer test-admin-token"}
JSON = {"Content-Type": "application/json"}
DEEP = b"[" * 5000 + b"]" * 5000


@pytest.fixture()
def app(redis_url: str, redis_client: redis.Redis) -> Iterator[Flask]:
    application = create_app(config(redis_url))
    yield application


WEBHOOK_REQUESTS: list[tuple[str, bytes, dict[str, str]]] = [
    ("/v1/webhooks/open", b"{not json", JSON),
    ("/v1/webhooks/open", b"", JSON),
    ("/v1/webhooks/open", b"null", JSON),
    ("/v1/webhooks/open", b"[1, 2, 3]", JSON),
    ("/v1/webhooks/open", b'"a string"', JSON),
    ("/v1/webhooks/open", DEEP, JSON),
    ("/v1/webhooks/open", b'{"a": "\\ud800"}', JSON),
    ("/v1/webhooks/open", b"\xff\xfe\x00garbage", JSON),
    ("/v1/webhooks/open", b'{"a": 1e99999}', JSON),
    ("/v1/webhooks/open", b'{"a": NaN}', JSON),
    ("/v1/webhooks/open", b'{"a": 1}', {"Content-Type": "text/plain"}),
    ("/v1/webhooks/open", b'{"a": 1}', {"Content-Type": "application/json; charset=latin-7"}),
    ("/v1/webhooks/open", b"not gzip", {**JSON, "Content-Encoding": "gzip"}),
    ("/v1/webhooks/open", gzip.compress(b"{" * 100_000), {**JSON, "Content-Encoding": "gzip"}),
    ("/v1/webhooks/open", b'{"a": 1}', {**JSON, "Content-Encoding": "br"}),
    ("/v1/webhooks/open", b'{"a": 1}', {**JSON, "Idempotency-Key": "k" * 10_000}),
    ("/v1/webhooks/open", b'{"a": 1}', {**JSON, "Content-Length": "-1"}),
    ("/v1/webhooks/open", b'{"at": "not a date"}', JSON),
    ("/v1/webhooks/open", b'{"at": {"nested": []}}', JSON),
    ("/v1/webhooks/open", b"x" * 100_000, JSON),
    ("/v1/webhooks/acme", b'{"a": 1}', {**JSON, "webhook-signature": "v1,%%%"}),
    ("/v1/webhooks/acme", b'{"a": 1}', {**JSON, "webhook-timestamp": "1e400", "webhook-id": "x"}),
    ("/v1/webhooks/gh", b'{"a": 1}', {**JSON, "X-Hub-Signature-256": "sha256=zz"}),
    ("/v1/webhooks/..%2f..%2fetc", b'{"a": 1}', JSON),
    ("/v1/webhooks/%00", b'{"a": 1}', JSON),
    ("/v1/webhooks/" + "s" * 5000, b'{"a": 1}', JSON),
    ("/v1/webhooks/open/batch", b'{"a": 1}\n{broken\n', {"Content-Type": "application/x-ndjson"}),
    ("/v1/webhooks/open/batch", b"\n\n\n", {"Content-Type": "application/x-ndjson"}),
    ("/v1/webhooks/open/batch", b"[]", JSON),
    ("/v1/webhooks/open/batch", b"[null, 1, []]", JSON),
    ("/v1/webhooks/open/batch", b'[{"a": 1}]' * 3, JSON),
    ("/v1/webhooks/open/batch", json.dumps([{"n": i} for i in range(100)]).encode(), JSON),
    ("/v1/webhooks/open/batch", DEEP, JSON),
]


@pytest.mark.parametrize("path,body,headers", WEBHOOK_REQUESTS, ids=range(len(WEBHOOK_REQUESTS)))
def test_hostile_webhook_requests_never_get_a_500(
    app: Flask, path: str, body: bytes, headers: dict[str, str]
) -> None:
    answer = app.test_client().post(path, data=body, headers=headers)
    assert answer.status_code < 500, (answer.status_code, answer.get_data()[:300])
    if answer.status_code >= 400:
        assert answer.get_json()["error"]


ADMIN_REQUESTS: list[tuple[str, str, Any]] = [
    ("POST", "/admin/imports", b"{not json"),
    ("POST", "/admin/imports", b"[]"),
    ("POST", "/admin/imports", b"null"),
    ("POST", "/admin/imports", {"uri": 12, "schema": [], "purpose": {}}),
    (
        "POST",
        "/admin/imports",
        {
            "uri": "s3://b/x",
            "schema": "entities",
            "purpose": "p",
            "mapping": {"a": ["not", "a", "string"]},
        },
    ),
    ("POST", "/admin/imports", {"uri": "s3://b/x", "schema": "../../etc/passwd", "purpose": "p"}),
    (
        "POST",
        "/admin/imports",
        {"uri": "s3://b/" + "x" * 5000, "schema": "entities", "purpose": "p"},
    ),
    (
        "POST",
        "/admin/imports",
        {"uri": "s3://b/x", "schema": "entities", "purpose": "p", "extra": True},
    ),
    ("POST", "/admin/imports", DEEP),
    ("GET", "/admin/imports/" + "i" * 3000, None),
    ("GET", "/admin/imports/%00%ff", None),
    ("GET", "/admin/dlq?limit=abc", None),
    ("GET", "/admin/dlq?limit=-99999999999999999999", None),
    ("GET", "/admin/dlq?kind=%00&source=%ff", None),
    ("GET", "/admin/dlq?id=nope", None),
    ("POST", "/admin/dlq/retry", b"{broken"),
    ("POST", "/admin/dlq/retry", {"ids": "not a list"}),
    ("POST", "/admin/dlq/retry", {"ids": [1, None, {}]}),
    ("POST", "/admin/dlq/retry", {"ids": ["no-such-entry"]}),
    ("POST", "/admin/dlq/retry", {"all": "yes", "timeout": "soon"}),
    ("POST", "/admin/dlq/retry", {"all": True, "timeout": 1e400}),
    ("POST", "/admin/dlq/retry", {"all": True, "kind": ["row"], "importId": {}}),
    ("POST", "/admin/dlq/retry", {"all": True, "source": 5, "wait": "no"}),
]


@pytest.mark.parametrize("method,path,body", ADMIN_REQUESTS, ids=range(len(ADMIN_REQUESTS)))
def test_hostile_admin_requests_never_get_a_500(
    stack_env: dict[str, str], method: str, path: str, body: Any
) -> None:
    client: FlaskClient = create_app(load_settings(stack_env)).test_client()
    if isinstance(body, bytes):
        answer = client.open(path, method=method, data=body, headers={**AUTH, **JSON})
    else:
        answer = client.open(path, method=method, json=body, headers=AUTH)
    assert answer.status_code < 500, (answer.status_code, answer.get_data()[:300])
    if answer.status_code >= 400:
        assert answer.get_json()["error"]
