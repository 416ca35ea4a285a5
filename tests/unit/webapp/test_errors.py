"""What the web answers when a request meets a bug (500) or a dependency outage (503)."""

from __future__ import annotations

import pytest
import redis
from flask import Flask
from prometheus_client import REGISTRY

from ingest.config import build_settings
from ingest.errors import RetryableError
from webapp import create_app


def unhandled(endpoint: str) -> float:
    sample = "ingest_http_unhandled_errors_total"
    return REGISTRY.get_sample_value(sample, {"endpoint": endpoint}) or 0.0


@pytest.fixture()
def app() -> Flask:
    application = create_app(build_settings({"redisUrl": "redis://127.0.0.1:1/0"}))

    @application.get("/test/bug")
    def bug() -> str:
        raise KeyError("a bug in the service")

    @application.get("/test/redis-down")
    def redis_down() -> str:
        raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:1")

    @application.get("/test/redis-timeout")
    def redis_timeout() -> str:
        raise redis.exceptions.TimeoutError("Timeout reading from socket")

    @application.get("/test/redis-full")
    def redis_full() -> str:
        raise redis.exceptions.ResponseError(
            "OOM command not allowed when used memory > 'maxmemory'."
        )

    @application.get("/test/redis-wrong-command")
    def redis_wrong() -> str:
        raise redis.exceptions.ResponseError("WRONGTYPE Operation against a key")

    @application.get("/test/transient")
    def transient() -> str:
        raise RetryableError("the sink is slow")

    return application


class TestBugs:
    def test_a_bug_is_a_500_with_the_request_id(self, app: Flask) -> None:
        answer = app.test_client().get("/test/bug", headers={"X-Request-ID": "req-42"})
        assert answer.status_code == 500
        body = answer.get_json()
        assert body["requestId"] == "req-42" and "req-42" in body["error"]
        assert answer.headers["X-Request-ID"] == "req-42"
        assert "Retry-After" not in answer.headers

    def test_a_bug_is_counted(self, app: Flask) -> None:
        before = unhandled("bug")
        app.test_client().get("/test/bug")
        assert unhandled("bug") == before + 1

    def test_a_redis_error_that_is_a_bug_is_a_500(self, app: Flask) -> None:
        answer = app.test_client().get("/test/redis-wrong-command")
        assert answer.status_code == 500 and answer.get_json()["requestId"]

    def test_the_answer_carries_a_generated_request_id(self, app: Flask) -> None:
        answer = app.test_client().get("/test/bug")
        assert answer.get_json()["requestId"] == answer.headers["X-Request-ID"]


class TestDependencyOutages:
    @pytest.mark.parametrize(
        "path", ["/test/redis-down", "/test/redis-timeout", "/test/redis-full", "/test/transient"]
    )
    def test_an_outage_is_a_503_with_retry_after(self, app: Flask, path: str) -> None:
        endpoint = path.removeprefix("/test/").replace("-", "_")
        before = unhandled(endpoint)
        answer = app.test_client().get(path)
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "5"
        assert "retry later" in answer.get_json()["error"]
        assert unhandled(endpoint) == before


class TestWebhookFastPath:
    """Single webhook events skip Flask (webapp.fastpath): the same honest answers there."""

    @pytest.fixture()
    def client(self, monkeypatch: pytest.MonkeyPatch) -> object:
        sources = {"open": {"signature": {"scheme": "none"}, "purpose": "p"}}
        settings = build_settings(
            {"redisUrl": "redis://127.0.0.1:1/0", "http": {"sources": sources}}
        )
        return create_app(settings).test_client()

    def test_a_bug_is_a_500_with_the_request_id(
        self, client: object, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from webapp import fastpath, webhooks

        def broken(*_: object) -> None:
            raise KeyError("a bug in the service")

        # Both fronts: the Flask route serves single events while tracing is on (another
        # test of the session may have turned it on), the fast path otherwise.
        monkeypatch.setattr(fastpath, "receive_single", broken)
        monkeypatch.setattr(webhooks, "receive_single", broken)
        before = unhandled(fastpath.ENDPOINT)
        answer = client.post("/v1/webhooks/open", json={"n": 1})  # type: ignore[attr-defined]
        assert answer.status_code == 500
        assert answer.json["requestId"] == answer.headers["X-Request-ID"]
        assert answer.json["requestId"] in answer.json["error"]
        assert "Retry-After" not in answer.headers
        assert unhandled(fastpath.ENDPOINT) == before + 1

    def test_redis_down_is_a_503_not_a_500(self, client: object) -> None:
        answer = client.post("/v1/webhooks/open", json={"n": 1})  # type: ignore[attr-defined]
        assert answer.status_code == 503 and answer.headers["Retry-After"]
        assert "Redis" in answer.json["error"]
