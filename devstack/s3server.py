"""The local S3 server: moto's server mode, answering ranged GETs from the requested bytes only.

moto 5.2 answers ``GET`` with ``Range: bytes=a-b`` by reading the whole object out of its
buffer and slicing the range from that copy. An import reads a large object as ranges of
32 MiB, so for a 265 MB object split 8 ways the local server copied 2.4 GB to serve 265 MB,
and cost more CPU per MB than the worker's parsing (15 ms/MB of input, measured by
``loadtests/bench_s3_import.py``). Real S3 costs the importing machine nothing of the sort.

Run as ``python devstack/s3server.py -H HOST -p PORT`` (the arguments of ``moto_server``); it
patches two moto internals and starts moto's own server:

* ``S3Response.get_object`` notes a single ``bytes=a-b`` or ``bytes=a-`` range of a plain
  GET (no ``partNumber``) for ``FakeKey.value``, which then reads those bytes only, as a
  :class:`_Window` that knows where it lies in the object;
* ``S3Response._handle_range_header`` answers a window with the same 206, ``Content-Range``
  and ``Content-Length`` that moto computes from the whole object.

Every other request (suffix ranges, several ranges, a start past the end, HEAD, part
numbers, non-range GETs) takes moto's own code unchanged. When moto's internals are not
what this module expects (another moto version), it patches nothing and says so on stderr.
"""

from __future__ import annotations

import re
import sys
import threading
from typing import Any

__all__ = ["main", "patch_ranged_gets"]

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_local = threading.local()  # moto's server runs each request on a thread of its own


class _Window(bytes):
    """Bytes ``begin`` .. ``begin + len - 1`` of an object of ``total`` bytes."""

    begin: int
    total: int


def _simple_range(header: str | None) -> tuple[int, int | None] | None:
    """``(a, b)`` for ``bytes=a-b`` (``b`` None for ``bytes=a-``), None for anything else."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    begin = int(match.group(1))
    end = int(match.group(2)) if match.group(2) else None
    if end is not None and end < begin:
        return None  # moto serves these as a whole object: leave them to it
    return begin, end


def patch_ranged_gets() -> bool:
    """Patch moto as described in the module docstring; False (and no change) if it cannot."""
    try:
        from moto.s3 import models, responses

        value = models.FakeKey.value
        get_object = responses.S3Response.get_object
        handle_range = responses.S3Response._handle_range_header
    except (ImportError, AttributeError):
        return False
    if not isinstance(value, property) or value.fget is None or value.fset is None:
        return False
    read_all = value.fget

    def read_value(key: Any) -> bytes:
        wanted = getattr(_local, "wanted", None)
        size = getattr(key, "size", None)
        buffer = getattr(key, "_value_buffer", None)
        if wanted is None or not isinstance(size, int) or buffer is None or wanted[0] >= size:
            return read_all(key)  # a start past the end: moto answers 416 from the whole
        begin, end = wanted
        stop = size if end is None else min(end + 1, size)
        with key.lock:
            buffer.seek(begin)
            window = _Window(buffer.read(stop - begin))
        window.begin, window.total = begin, size
        return window

    def windowed_get_object(self: Any) -> Any:
        wanted = None
        if self.method == "GET" and "partNumber" not in self.querystring:
            wanted = _simple_range(self.headers.get("range"))
        _local.wanted = wanted
        try:
            return get_object(self)
        finally:
            _local.wanted = None

    def windowed_range(self: Any, request: Any, headers: dict[str, Any], content: Any) -> Any:
        if not isinstance(content, _Window) or request.method != "GET":
            return handle_range(self, request, headers, content)
        begin, end, last = content.begin, content.begin + len(content) - 1, content.total - 1
        if begin or end < last:  # as moto: a partial answer carries no whole-object checksum
            for name in [h for h in headers if h.startswith("x-amz-checksum-")]:
                del headers[name]
        headers["content-range"] = f"bytes {begin}-{end}/{content.total}"
        headers["content-length"] = str(len(content))
        return 206, headers, content

    models.FakeKey.value = property(read_value, value.fset)
    responses.S3Response.get_object = windowed_get_object
    responses.S3Response._handle_range_header = windowed_range
    return True


def main(argv: list[str] | None = None) -> None:
    if not patch_ranged_gets():
        print("s3server: moto's internals differ; ranged GETs read whole objects", file=sys.stderr)
    from moto.server import main as moto_main

    moto_main(argv)


if __name__ == "__main__":
    main()
