"""Planning finds where a split object's records start with ranged GETs of its first bytes."""

from __future__ import annotations

from typing import Any

import pytest

from ingest.s3csv.planning import _body_start
from ingest.s3csv.ranges import MAX_HEADER_BYTES, CsvDialect, CsvFormatError
from ingest.s3csv.reader import ObjectInfo

pytestmark = pytest.mark.integration


class CountingClient:
    """The real client, with every GetObject's Range kept."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.ranges: list[str | None] = []

    def get_object(self, **params: Any) -> Any:
        self.ranges.append(params.get("Range"))
        return self.client.get_object(**params)


def put(client: Any, bucket: str, key: str, body: bytes) -> ObjectInfo:
    etag = str(client.put_object(Bucket=bucket, Key=key, Body=body)["ETag"]).strip('"')
    return ObjectInfo(key, len(body), etag)


def fetched(ranges: list[str | None]) -> int:
    total = 0
    for item in ranges:
        assert item is not None and item.startswith("bytes=")  # never a whole-object GET
        first, last = item.removeprefix("bytes=").split("-")
        total += int(last) - int(first) + 1
    return total


def test_a_short_header_takes_one_ranged_get(s3_client: Any, bucket: str) -> None:
    body = b"id,name\n" + b"1,a\n" * 300_000
    obj = put(s3_client, bucket, "big.csv", body)
    client = CountingClient(s3_client)
    assert _body_start(client, bucket, obj, CsvDialect()) == (8, 2, b"id,name\n")  # records: line 2
    assert fetched(client.ranges) == 64 << 10


def test_a_long_header_with_a_quoted_newline_is_read_on(s3_client: Any, bucket: str) -> None:
    header = b'"a\nb",' + b",".join(b"c%d" % i for i in range(30_000)) + b"\r\n"
    assert len(header) > 128 << 10
    obj = put(s3_client, bucket, "wide.csv", header + b"1,2\n" * 100_000)
    client = CountingClient(s3_client)
    end, first_line, raw = _body_start(client, bucket, obj, CsvDialect()) or (0, 0, b"")
    assert (end, first_line, raw) == (len(header), 3, header)  # the header spans 2 lines
    assert len(client.ranges) == 3 and fetched(client.ranges) == 256 << 10  # 64, 64, 128 KiB


def test_a_header_and_nothing_else(s3_client: Any, bucket: str) -> None:
    obj = put(s3_client, bucket, "only.csv", b"id,name")
    assert _body_start(s3_client, bucket, obj, CsvDialect()) is None


def test_no_end_of_header_in_the_first_mebibyte(s3_client: Any, bucket: str) -> None:
    obj = put(s3_client, bucket, "nohead.csv", b"x" * (MAX_HEADER_BYTES + 10) + b"\n1\n")
    client = CountingClient(s3_client)
    with pytest.raises(CsvFormatError, match="no end of the header"):
        _body_start(client, bucket, obj, CsvDialect())
    assert fetched(client.ranges) == MAX_HEADER_BYTES


def test_no_header_reads_nothing(s3_client: Any, bucket: str) -> None:
    obj = put(s3_client, bucket, "plain.csv", b"1,a\n")
    client = CountingClient(s3_client)
    assert _body_start(client, bucket, obj, CsvDialect(header=False)) == (0, 1, None)
    assert client.ranges == []
