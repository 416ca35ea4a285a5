"""S3 access against a real local S3 server: listing, ranged and streaming reads, decompression."""

from __future__ import annotations

import gzip
import hashlib
import io
from collections.abc import Iterator
from typing import Any

import pytest
import zstandard
from botocore.exceptions import ResponseStreamingError

from ingest.s3csv import reader
from ingest.s3csv.ranges import CsvDialect, CsvFormatError, index_boundaries
from ingest.s3csv.records import parse_records

pytestmark = pytest.mark.integration

DIALECT = CsvDialect()


def put(client: Any, bucket: str, key: str, body: bytes) -> str:
    return str(client.put_object(Bucket=bucket, Key=key, Body=body)["ETag"]).strip('"')


def csv_bytes(rows: int) -> bytes:
    lines = [b"id,note"] + [
        b'%d,"line %d, with ""quotes""\nand a newline"' % (i, i) for i in range(rows)
    ]
    return b"\r\n".join(lines) + b"\r\n"


class TestClient:
    def test_clients_are_shared_per_endpoint_and_region(self, s3_endpoint: str) -> None:
        client = reader.s3_client(s3_endpoint, "us-east-1")
        assert reader.s3_client(s3_endpoint, "us-east-1") is client
        assert reader.s3_client(s3_endpoint, "eu-west-1") is not client

    def test_client_reaches_the_endpoint(self, s3_endpoint: str, bucket: str) -> None:
        client = reader.s3_client(s3_endpoint, "us-east-1")
        names = [b["Name"] for b in client.list_buckets()["Buckets"]]
        assert bucket in names


class TestListObjects:
    def test_every_page_is_listed_and_directories_skipped(
        self, s3_client: Any, bucket: str
    ) -> None:
        keys = sorted(f"in/obj-{i:04d}.csv" for i in range(230))
        for key in keys:
            put(s3_client, bucket, key, b"a\n")
        put(s3_client, bucket, "in/sub/", b"")
        put(s3_client, bucket, "other/x.csv", b"a\n")
        calls: list[str] = []
        s3_client.meta.events.register(
            "after-call.s3.ListObjectsV2", lambda **kwargs: calls.append("page")
        )
        listed = list(reader.list_objects(s3_client, bucket, "in/", page_size=100))
        assert [o.key for o in listed] == keys
        assert len(calls) == 3
        assert listed[0].size == 2
        assert listed[0].etag == hashlib.md5(b"a\n").hexdigest()

    def test_empty_prefix_lists_nothing(self, s3_client: Any, bucket: str) -> None:
        assert list(reader.list_objects(s3_client, bucket, "nothing/")) == []


class TestReadRange:
    def test_returns_exactly_the_range(self, s3_client: Any, bucket: str) -> None:
        body = bytes(range(256)) * 10
        etag = put(s3_client, bucket, "r.bin", body)
        assert reader.read_range(s3_client, bucket, "r.bin", 10, 300, etag) == body[10:300]
        assert reader.read_range(s3_client, bucket, "r.bin", 2550, 2560) == body[2550:]
        assert reader.read_range(s3_client, bucket, "r.bin", 5, 5) == b""

    def test_a_changed_object_fails_loudly(self, s3_client: Any, bucket: str) -> None:
        etag = put(s3_client, bucket, "c.csv", b"a\n1\n")
        put(s3_client, bucket, "c.csv", b"a\n2\n")
        with pytest.raises(reader.ObjectChangedError, match="changed"):
            reader.read_range(s3_client, bucket, "c.csv", 0, 2, etag)
        with pytest.raises(reader.ObjectChangedError):
            list(reader.iter_object(s3_client, bucket, "c.csv", etag=etag))

    def test_a_range_past_the_end_fails_loudly(self, s3_client: Any, bucket: str) -> None:
        etag = put(s3_client, bucket, "s.csv", b"a\n1\n")
        with pytest.raises(reader.ObjectChangedError):
            reader.read_range(s3_client, bucket, "s.csv", 10, 20, etag)
        with pytest.raises(reader.ObjectChangedError):
            reader.read_range(s3_client, bucket, "s.csv", 2, 20, etag)


class _BreakingBody:
    """A body that breaks off after ``limit`` bytes, as a dropped connection does."""

    def __init__(self, body: Any, limit: int) -> None:
        self.body, self.limit = body, limit

    def iter_chunks(self, chunk_size: int) -> Iterator[bytes]:
        sent = 0
        for chunk in self.body.iter_chunks(min(chunk_size, 1000)):
            if sent + len(chunk) > self.limit:
                raise ResponseStreamingError(error="connection reset")
            sent += len(chunk)
            yield chunk

    def close(self) -> None:
        self.body.close()


class _FlakyClient:
    """Delegates to a real client; the first ``breaks`` bodies break off half-way."""

    def __init__(self, client: Any, breaks: int) -> None:
        self.client, self.breaks, self.ranges = client, breaks, []

    def get_object(self, **params: Any) -> dict[str, Any]:
        self.ranges.append(params.get("Range"))
        response = dict(self.client.get_object(**params))
        if self.breaks:
            self.breaks -= 1
            response["Body"] = _BreakingBody(response["Body"], 3000)
        return response


class TestIterObject:
    def test_chunks_reassemble_the_object(self, s3_client: Any, bucket: str) -> None:
        body = csv_bytes(2000)
        put(s3_client, bucket, "o.csv", body)
        chunks = list(reader.iter_object(s3_client, bucket, "o.csv", chunk_size=10_000))
        assert b"".join(chunks) == body
        assert max(map(len, chunks)) <= 10_000

    def test_a_broken_body_is_resumed_where_it_stopped(self, s3_client: Any, bucket: str) -> None:
        body = csv_bytes(500)
        put(s3_client, bucket, "f.csv", body)
        flaky = _FlakyClient(s3_client, breaks=2)
        assert b"".join(reader.iter_object(flaky, bucket, "f.csv")) == body
        assert flaky.ranges == [None, "bytes=3000-", "bytes=6000-"]

    def test_a_body_that_keeps_breaking_gives_up(self, s3_client: Any, bucket: str) -> None:
        put(s3_client, bucket, "g.csv", csv_bytes(500))
        with pytest.raises(ResponseStreamingError):
            list(reader.iter_object(_FlakyClient(s3_client, breaks=10), bucket, "g.csv"))

    def test_empty_object(self, s3_client: Any, bucket: str) -> None:
        put(s3_client, bucket, "e.csv", b"")
        assert list(reader.iter_object(s3_client, bucket, "e.csv")) == []


class TestDecompression:
    @pytest.mark.parametrize(
        ("key", "compressed"),
        [("a.csv.gz", True), ("a.CSV.ZST", True), ("a.zstd", True), ("a.csv", False)],
    )
    def test_is_compressed(self, key: str, compressed: bool) -> None:
        assert reader.is_compressed(key) is compressed

    def test_gzip_members_stream_in_bounded_chunks(self, s3_client: Any, bucket: str) -> None:
        text = csv_bytes(30_000)
        members = gzip.compress(text[:100_000]) + gzip.compress(text[100_000:])
        put(s3_client, bucket, "big.csv.gz", members)
        chunks = list(reader.iter_decompressed(s3_client, bucket, "big.csv.gz", 64 << 10))
        assert b"".join(chunks) == text
        assert max(map(len, chunks)) <= 64 << 10

    def test_zstd_frames_stream_in_bounded_chunks(self, s3_client: Any, bucket: str) -> None:
        text = csv_bytes(30_000)
        compressor = zstandard.ZstdCompressor()
        put(
            s3_client,
            bucket,
            "big.csv.zst",
            compressor.compress(text[:100_000]) + compressor.compress(text[100_000:]),
        )
        chunks = list(reader.iter_decompressed(s3_client, bucket, "big.csv.zst", 64 << 10))
        assert b"".join(chunks) == text
        assert max(map(len, chunks)) <= 64 << 10

    def test_zstd_stream_without_content_size(self, s3_client: Any, bucket: str) -> None:
        text = csv_bytes(5000)
        sink = io.BytesIO()
        with zstandard.ZstdCompressor().stream_writer(sink, closefd=False) as writer:
            writer.write(text)
        put(s3_client, bucket, "s.csv.zstd", sink.getvalue())
        assert b"".join(reader.iter_decompressed(s3_client, bucket, "s.csv.zstd", 4096)) == text

    @pytest.mark.parametrize("key", ["bad.csv.gz", "bad.csv.zst"])
    def test_corrupt_data_is_a_format_error(self, s3_client: Any, bucket: str, key: str) -> None:
        text = csv_bytes(30_000)
        good = (
            gzip.compress(text)
            if key.endswith(".gz")
            else (zstandard.ZstdCompressor().compress(text))
        )
        put(s3_client, bucket, key, good[: len(good) // 2])
        with pytest.raises(CsvFormatError, match="cannot decompress"):
            list(reader.iter_decompressed(s3_client, bucket, key, 4096))

    def test_plain_objects_pass_through(self, s3_client: Any, bucket: str) -> None:
        put(s3_client, bucket, "p.csv", b"a\n1\n")
        assert b"".join(reader.iter_decompressed(s3_client, bucket, "p.csv", 2)) == b"a\n1\n"


class TestRangesFromS3:
    def test_ranged_reads_parse_to_the_same_records_as_the_whole(
        self, s3_client: Any, bucket: str
    ) -> None:
        body = csv_bytes(3000)
        etag = put(s3_client, bucket, "whole.csv", body)
        [info] = reader.list_objects(s3_client, bucket, "whole.csv")
        chunks = reader.iter_object(s3_client, bucket, info.key, chunk_size=4096, etag=etag)
        index = index_boundaries(chunks, info.size, 20_000, DIALECT)
        assert len(index.ranges) > 3 and index.header == b"id,note\r\n"
        parts = [
            parse_records(
                reader.read_range(s3_client, bucket, info.key, r.start, r.end, info.etag),
                header=index.header or b"",
                dialect=DIALECT,
                first_line=r.first_line,
                base_offset=r.start,
            )
            for r in index.ranges
        ]
        assert sum(p.table.num_rows for p in parts) == 3000
        lines = [int(n) for p in parts for n in p.line_numbers]
        assert lines == list(range(2, 6002, 2))
        notes = [v for p in parts for v in p.table.column("note").to_pylist()]
        assert notes[1234] == 'line 1234, with "quotes"\nand a newline'
