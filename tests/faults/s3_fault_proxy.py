"""An HTTP proxy in front of the local S3 server that injects faults into ranged GETs."""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import urlsplit

__all__ = ["FaultProxy", "Mode", "Seen"]

Mode = Literal["ok", "error500", "slowdown", "close"]
_ERRORS = {"error500": (500, "InternalError"), "slowdown": (503, "SlowDown")}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}


@dataclass(frozen=True)
class Seen:
    """One request the proxy got: its path, Range header, the mode applied and the status."""

    path: str
    range: str | None
    mode: Mode
    status: int  # 0: the connection was closed without an answer


class FaultProxy(ThreadingHTTPServer):
    """Forwards everything to ``upstream``; requests with a ``Range`` header get ``mode``.

    ``ok`` forwards, ``error500`` answers S3's ``InternalError``, ``slowdown`` answers 503
    ``SlowDown``, ``close`` closes the connection without an answer (what a client with a
    read timeout sees after the timeout, without the wait). Ranges in ``spared`` are always
    forwarded, and left out of :meth:`ranged`.
    """

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.mode: Mode = "ok"
        self.spared: frozenset[str] = frozenset()
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.shutdown()
        self.server_close()

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def ranged(self) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.range is not None and s.range not in self.spared]

    def faults(self) -> Counter[Mode]:
        return Counter(s.mode for s in self.ranged() if s.mode != "ok")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's pool expects
    server: FaultProxy

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        byte_range = self.headers.get("Range") if self.command == "GET" else None
        faulted = byte_range is not None and byte_range not in self.server.spared
        mode: Mode = self.server.mode if faulted else "ok"
        if mode == "close":
            self.server.record(Seen(self.path, byte_range, mode, 0))
            self.close_connection = True
            return
        if mode in _ERRORS:
            status, code = _ERRORS[mode]
            payload = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>injected fault</Message>"
                "<RequestId>fault-proxy</RequestId></Error>"
            ).encode()
            self.server.record(Seen(self.path, byte_range, mode, status))
            self._answer(status, [("Content-Type", "application/xml")], payload)
            return
        status, headers, data = self._forward(body)
        self.server.record(Seen(self.path, byte_range, mode, status))
        self._answer(status, headers, data)

    def _forward(self, body: bytes | None) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.server.upstream, timeout=30)
        try:
            conn.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
            response = conn.getresponse()
            data = response.read()
            headers = response.getheaders()
        finally:
            conn.close()
        if self.command == "HEAD":
            # No body to measure: keep the object's own length.
            kept = [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP - {"content-length"}]
            return response.status, kept, b""
        return response.status, [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP], data

    def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
