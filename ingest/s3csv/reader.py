"""S3 access for CSV imports: a shared client, paginated listing, ranged and streaming reads.

Reads pinned to an ETag fail with :class:`ObjectChangedError` when the object was replaced,
so a range is never cut from a different version than the one that was planned.
Compressed objects (gzip, zstd) are decompressed as a stream, in bounded memory.
"""

from __future__ import annotations

import gzip
import io
import os
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import zstandard
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from ingest.s3csv.ranges import CsvFormatError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ObjectChangedError",
    "ObjectInfo",
    "S3Client",
    "is_compressed",
    "iter_decompressed",
    "iter_object",
    "list_objects",
    "read_range",
    "s3_client",
]

S3Client = Any  # boto3's generated client class; the stubs are a dev-only dependency
DEFAULT_CHUNK_SIZE = 8 << 20
GZIP_SUFFIXES = (".gz", ".gzip")
ZSTD_SUFFIXES = (".zst", ".zstd")
# Compressed bytes per zstd call: the output of one call is at most this times the ratio.
ZSTD_INPUT_PIECE = 256 << 10
# botocore retries the request, not the reading of a body that breaks half-way.
BODY_READ_ATTEMPTS = 4
_BODY_ERRORS = (
    ResponseStreamingError,
    ReadTimeoutError,
    IncompleteReadError,
    ConnectionClosedError,
)
_CLIENT_CONFIG = Config(
    retries={"max_attempts": 5, "mode": "standard"},
    connect_timeout=5,
    read_timeout=60,
    max_pool_connections=32,
    tcp_keepalive=True,
)
_clients: dict[tuple[int, str | None, str | None], S3Client] = {}
_clients_lock = threading.Lock()


class ObjectChangedError(RuntimeError):
    """The object no longer matches the ETag (or size) it was planned with."""


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object; ``etag`` without its quotes."""

    key: str
    size: int
    etag: str


def s3_client(endpoint_url: str | None, region: str | None = None) -> S3Client:
    """Return the process's S3 client for this endpoint and region (credentials: boto3's chain).

    Clients are thread-safe and cached; the process id is part of the key because a
    client's connection pool must not be shared across a fork (Celery's prefork pool).
    """
    key = (os.getpid(), endpoint_url, region)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            # A Session is not thread-safe, so each client is made from its own, under the lock.
            client = boto3.session.Session().client(
                "s3", endpoint_url=endpoint_url, region_name=region, config=_CLIENT_CONFIG
            )
            _clients[key] = client
        return client


def list_objects(
    client: S3Client, bucket: str, prefix: str, page_size: int = 1000
) -> Iterator[ObjectInfo]:
    """Yield the objects under ``prefix``, one listing page at a time, skipping "directory" keys."""
    paginator = client.get_paginator("list_objects_v2")
    pages = paginator.paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}
    )
    for page in pages:
        for item in page.get("Contents", []):
            if item["Key"].endswith("/"):
                continue
            yield ObjectInfo(item["Key"], int(item["Size"]), item["ETag"].strip('"'))


def _get_object(
    client: S3Client, bucket: str, key: str, etag: str | None, byte_range: str | None = None
) -> dict[str, Any]:
    params: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if byte_range:
        params["Range"] = byte_range
    if etag:
        params["IfMatch"] = '"' + etag.strip('"') + '"'  # an entity tag is quoted in HTTP
    try:
        return dict(client.get_object(**params))
    except ClientError as exc:
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if error.get("Code") == "PreconditionFailed" or status == 412:
            raise ObjectChangedError(
                f"s3://{bucket}/{key} changed: its ETag is no longer {etag}"
            ) from exc
        if error.get("Code") == "InvalidRange" or status == 416:
            raise ObjectChangedError(
                f"s3://{bucket}/{key} is shorter than planned ({byte_range})"
            ) from exc
        raise


def read_range(
    client: S3Client, bucket: str, key: str, start: int, end: int, etag: str | None = None
) -> bytes:
    """Return the bytes ``[start, end)`` of an object; with ``etag``, only of that version."""
    if end <= start:
        return b""
    byte_range = f"bytes={start}-{end - 1}"
    for attempt in range(1, BODY_READ_ATTEMPTS + 1):
        response = _get_object(client, bucket, key, etag, byte_range)
        try:
            data: bytes = response["Body"].read()
            break
        except _BODY_ERRORS:
            if attempt == BODY_READ_ATTEMPTS:
                raise
        finally:
            response["Body"].close()
    if len(data) != end - start:
        raise ObjectChangedError(
            f"s3://{bucket}/{key}: asked for {end - start} bytes at {start}, got {len(data)}"
        )
    return data


def iter_object(
    client: S3Client,
    bucket: str,
    key: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    etag: str | None = None,
) -> Iterator[bytes]:
    """Stream a whole object in chunks of at most ``chunk_size`` bytes.

    A body that breaks off is resumed with a ranged GET from the last byte received,
    pinned to the ETag of the first response so two versions are never spliced together.
    """
    offset, size, failures = 0, None, 0
    while size is None or offset < size:
        response = _get_object(client, bucket, key, etag, f"bytes={offset}-" if offset else None)
        etag = etag or str(response["ETag"]).strip('"')
        size = size if size is not None else int(response["ContentLength"])
        body = response["Body"]
        try:
            for chunk in body.iter_chunks(chunk_size):
                offset += len(chunk)
                yield chunk
            if offset != size:
                raise IncompleteReadError(actual_bytes=offset, expected_bytes=size)
        except _BODY_ERRORS:
            failures += 1
            if failures >= BODY_READ_ATTEMPTS:
                raise
        finally:
            body.close()


def is_compressed(key: str) -> bool:
    """Whether the key names a gzip or zstd object, which is read whole and decompressed."""
    return key.lower().endswith(GZIP_SUFFIXES + ZSTD_SUFFIXES)


class _ChunkStream(io.RawIOBase):
    """A read-only file over an iterator of byte chunks, for the gzip reader."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__()
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def _gunzip(chunks: Iterable[bytes], chunk_size: int) -> Iterator[bytes]:
    # GzipFile reads member after member and raises EOFError on a truncated one.
    with gzip.GzipFile(fileobj=io.BufferedReader(_ChunkStream(chunks)), mode="rb") as stream:
        while piece := stream.read(chunk_size):
            yield piece


def _unzstd(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decompress zstd frame after frame; a stream that ends inside a frame is an error.

    zstandard's stream_reader returns truncated data without a word, so frames are fed
    to a decompression object in small pieces (bounding the output of each) and its
    ``eof`` tells whether the last frame was complete.
    """
    context = zstandard.ZstdDecompressor()
    frame, started = context.decompressobj(), False
    for chunk in chunks:
        for start in range(0, len(chunk), ZSTD_INPUT_PIECE):
            data = chunk[start : start + ZSTD_INPUT_PIECE]
            while data:
                started = True
                yield frame.decompress(data)
                if not frame.eof:
                    break
                data = frame.unused_data
                frame, started = context.decompressobj(), False
    if started:
        raise zstandard.ZstdError("the data ends inside a frame (truncated?)")


def _rechunk(pieces: Iterable[bytes], chunk_size: int) -> Iterator[bytes]:
    """Regroup small pieces into chunks of exactly ``chunk_size`` bytes (the last: fewer)."""
    pending: list[bytes] = []
    size = 0
    for piece in pieces:
        pending.append(piece)
        size += len(piece)
        if size >= chunk_size:
            joined = b"".join(pending)
            whole = size - size % chunk_size
            for offset in range(0, whole, chunk_size):
                yield joined[offset : offset + chunk_size]
            pending, size = [joined[whole:]], size - whole
    if size:
        yield b"".join(pending)


def iter_decompressed(
    client: S3Client,
    bucket: str,
    key: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    etag: str | None = None,
) -> Iterator[bytes]:
    """Stream the decompressed bytes of an object in chunks of at most ``chunk_size`` bytes.

    Memory stays at a few chunks. Objects that are not compressed (see
    :func:`is_compressed`) are streamed as they are; corrupt or truncated compressed
    data raises :class:`CsvFormatError`.
    """
    chunks = iter_object(client, bucket, key, chunk_size, etag)
    lower = key.lower()
    if lower.endswith(GZIP_SUFFIXES):
        pieces = _gunzip(chunks, chunk_size)
    elif lower.endswith(ZSTD_SUFFIXES):
        pieces = _rechunk(_unzstd(chunks), chunk_size)
    else:
        yield from chunks
        return
    try:
        yield from pieces
    except (gzip.BadGzipFile, EOFError, zlib.error, zstandard.ZstdError) as exc:
        raise CsvFormatError(f"s3://{bucket}/{key}: cannot decompress: {exc}") from exc
