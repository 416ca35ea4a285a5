"""A whole body leaves in the same write as its headers; everything else as gunicorn sends it."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import pytest
from gunicorn.config import Config
from gunicorn.http import wsgi

from webapp.gunicorn_response import OneWriteResponse, install, install_peer_cache


@dataclass
class Request:
    method: str = "POST"
    version: tuple[int, int] = (1, 1)

    def should_close(self) -> bool:
        return False


class Socket:
    """Records what each write sent."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))


def respond(cls: type, method: str, headers: list[tuple[str, str]], pieces: list[bytes]) -> Socket:
    sock = Socket()
    resp = cls(Request(method), sock, Config())
    resp.start_response("202 ACCEPTED", headers)
    for piece in pieces:
        resp.write(piece)
    resp.close()
    return sock


def wire(sock: Socket) -> bytes:
    """The bytes sent, without the Date header (it changes every second)."""
    return b"".join(
        line for line in b"".join(sock.writes).split(b"\r\n") if not line.startswith(b"Date:")
    )


BODY = b'{"status":"accepted"}\n'
SIZED = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def test_a_whole_body_goes_out_with_its_headers_in_one_write() -> None:
    sock = respond(OneWriteResponse, "POST", SIZED, [BODY])
    assert len(sock.writes) == 1
    assert sock.writes[0].startswith(b"HTTP/1.1 202 ACCEPTED\r\n")
    assert sock.writes[0].endswith(b"\r\n\r\n" + BODY)
    assert wire(sock) == wire(respond(wsgi.Response, "POST", SIZED, [BODY]))


@pytest.mark.parametrize(
    ("method", "headers", "pieces"),
    [
        ("POST", SIZED, [BODY[:5], BODY[5:]]),  # in pieces
        ("POST", [("Content-Type", "application/json")], [BODY]),  # no length: chunked
        ("HEAD", SIZED, [BODY]),  # no body on the wire at all
        ("POST", SIZED, []),  # headers only, sent on close
    ],
    ids=["pieces", "chunked", "head", "empty"],
)
def test_other_answers_are_sent_as_gunicorn_sends_them(
    method: str, headers: list[tuple[str, str]], pieces: list[bytes]
) -> None:
    ours = respond(OneWriteResponse, method, headers, pieces)
    theirs = respond(wsgi.Response, method, headers, pieces)
    assert len(ours.writes) == len(theirs.writes)
    assert wire(ours) == wire(theirs)


def test_it_writes_to_a_real_socket() -> None:
    left, right = socket.socketpair()
    with left, right:
        resp = OneWriteResponse(Request(), left, Config())
        resp.start_response("202 ACCEPTED", SIZED)
        resp.write(BODY)
        left.shutdown(socket.SHUT_WR)
        received = b"".join(iter(lambda: right.recv(4096), b""))
    assert received.endswith(b"\r\n\r\n" + BODY)


def test_install_makes_gunicorn_build_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wsgi, "Response", wsgi.Response)  # restored after the test
    assert install()
    assert wsgi.Response is OneWriteResponse  # what wsgi.create builds for every request


@pytest.mark.parametrize("version", [(1, 1), (1, 0)])
def test_the_default_headers_are_gunicorns_own(version: tuple[int, int]) -> None:
    ours = OneWriteResponse(Request(version=version), Socket(), Config())
    theirs = wsgi.Response(Request(version=version), Socket(), Config())
    for resp in (ours, theirs):
        resp.start_response("202 ACCEPTED", [("Content-Type", "application/json")])
    mine, gunicorns = ours.default_headers(), theirs.default_headers()
    assert [h for h in mine if not h.startswith("Date:")] == [
        h for h in gunicorns if not h.startswith("Date:")
    ]
    assert [h[:11] for h in mine] == [h[:11] for h in gunicorns]  # the Date in its place


@pytest.mark.parametrize(
    ("peer", "allow"),
    [
        ("127.0.0.1", ["127.0.0.1", "::1"]),
        ("10.1.2.3", ["127.0.0.1", "::1"]),
        ("10.1.2.3", ["10.0.0.0/8"]),
        ("::1", ["127.0.0.1", "::1"]),
        ("10.1.2.3", ["*"]),
        ("not an address", ["127.0.0.1"]),
    ],
)
def test_the_peer_cache_answers_as_gunicorn_does(
    monkeypatch: pytest.MonkeyPatch, peer: str, allow: list[str]
) -> None:
    from gunicorn.http import message

    original = message._ip_in_allow_list
    monkeypatch.setattr(message, "_ip_in_allow_list", original)  # restored after the test
    config = Config()
    config.set("forwarded_allow_ips", ",".join(allow))
    networks = config.forwarded_allow_networks()
    expected = original(peer, allow, networks)
    assert install_peer_cache()
    for _ in range(2):  # computed, then remembered
        assert message._ip_in_allow_list(peer, allow, networks) is expected
    assert message._ip_in_allow_list.cache_info().hits >= 1
