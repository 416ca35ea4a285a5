"""What a worker says at start about how it hashes records."""

from __future__ import annotations

import logging

import pytest

from ingest import hashing
from tasks import observability


@pytest.mark.parametrize("backend", ["sha-ni", "portable"])
def test_a_built_hash_is_named(
    backend: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(hashing, "NATIVE_BACKEND", backend)
    with caplog.at_level(logging.INFO, logger=observability.log.name):
        observability.log_hashing_backend()
    [record] = caplog.records
    assert record.levelno == logging.INFO and f"ingest._speedups ({backend})" in record.message


def test_a_missing_build_is_a_warning_that_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(hashing, "NATIVE_BACKEND", None)
    with caplog.at_level(logging.INFO, logger=observability.log.name):
        observability.log_hashing_backend()
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "not built" in record.message and "reinstall" in record.message
