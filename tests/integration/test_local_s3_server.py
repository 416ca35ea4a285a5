"""The local S3 server (devstack/s3server.py) answers ranged GETs exactly as S3 and moto do,
while reading only the requested bytes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

ROOT = Path(__file__).resolve().parents[2]
# Larger than moto's in-memory spool (16 MiB): the object is read from its temporary file.
BODY = bytes(range(251)) * (17 * 1024 * 1024 // 251 + 1)
SIZE = len(BODY)


@pytest.fixture()
def stored(s3_client: Any, bucket: str) -> tuple[Any, str]:
    s3_client.put_object(Bucket=bucket, Key="big.bin", Body=BODY)
    return s3_client, bucket


@pytest.mark.parametrize(
    ("header", "begin", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=0-9", 0, 9),
        ("bytes=1000-", 1000, SIZE - 1),
        ("bytes=5-" + str(SIZE - 1), 5, SIZE - 1),
        ("bytes=" + str(SIZE - 10) + "-" + str(SIZE + 5000), SIZE - 10, SIZE - 1),
        ("bytes=-5", SIZE - 5, SIZE - 1),  # a suffix range: moto's own code
        ("bytes=16777210-16777300", 16777210, 16777300),  # across the spool size
    ],
)
def test_a_ranged_get_returns_exactly_the_range(
    stored: tuple[Any, str], header: str, begin: int, end: int
) -> None:
    client, bucket = stored
    answer = client.get_object(Bucket=bucket, Key="big.bin", Range=header)
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert answer["ContentRange"] == f"bytes {begin}-{end}/{SIZE}"
    assert answer["ContentLength"] == end - begin + 1
    assert answer["Body"].read() == BODY[begin : end + 1]


def test_a_range_past_the_end_is_refused_and_other_forms_get_the_whole_object(
    stored: tuple[Any, str],
) -> None:
    client, bucket = stored
    with pytest.raises(ClientError, match="InvalidRange"):
        client.get_object(Bucket=bucket, Key="big.bin", Range=f"bytes={SIZE}-")
    # Forms the server leaves to moto, which answers them with the whole object.
    for odd in ("bytes=9-3", "bytes=0-1,5-6", "bytes=x-y"):
        answer = client.get_object(Bucket=bucket, Key="big.bin", Range=odd)
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200, odd
        assert answer["Body"].read() == BODY, odd
    assert client.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == BODY


def test_the_patch_applies_to_the_installed_moto() -> None:
    """If moto's internals change, the server still works but reads whole objects again:
    this test says so instead. (In a process of its own: the patch is for the server.)"""
    check = (
        "import runpy, sys; "
        f"module = runpy.run_path({str(ROOT / 'devstack' / 's3server.py')!r}); "
        "sys.exit(0 if module['patch_ranged_gets']() else 1)"
    )
    assert subprocess.run([sys.executable, "-c", check], check=False).returncode == 0
