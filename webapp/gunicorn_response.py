"""gunicorn's HTTP/1 response, with a whole body sent in the same write as its headers.

gunicorn writes the status line and headers, then each body chunk, with a write each: two
``send`` calls (and two trips through gevent's socket) for a 202 of a hundred bytes. When the
WSGI app hands over its whole body in one piece, as every JSON answer of this service does,
:class:`OneWriteResponse` sends headers and body together. Anything else (several pieces,
chunked encoding, a body a HEAD request must not get) takes gunicorn's own path unchanged.
The ``Date`` header is formatted once a second instead of once a response.

:func:`install_peer_cache` remembers gunicorn's answer to "may this peer address set
``X-Forwarded-*`` headers", which it otherwise works out by parsing the address for every
request (a keep-alive connection asks again for each of its requests).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

from gunicorn import util
from gunicorn.http import message, wsgi

__all__ = ["OneWriteResponse", "install", "install_peer_cache"]


_date: tuple[int, str] = (0, "")


def http_date() -> str:
    """gunicorn's ``util.http_date()``, formatted again only when the second changes."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, util.http_date(now))
    return _date[1]


class OneWriteResponse(wsgi.Response):
    def default_headers(self) -> list[str]:
        """gunicorn's own (status line, Server, Date, Connection, Transfer-Encoding), with the
        Date formatted once a second."""
        if self.upgrade:
            connection = "upgrade"
        elif self.should_close():
            connection = "close"
        else:
            connection = "keep-alive"
        major, minor = self.req.version
        headers = [
            f"HTTP/{major}.{minor} {self.status}\r\n",
            f"Server: {self.version}\r\n",
            f"Date: {http_date()}\r\n",
            f"Connection: {connection}\r\n",
        ]
        if self.chunked:
            headers.append("Transfer-Encoding: chunked\r\n")
        return headers

    def write(self, arg: Any) -> None:
        if (
            not self.headers_sent  # type: ignore[has-type]
            and type(arg) is bytes
            and not self.chunked
            and self.response_length == len(arg)
            and not self._omits_body
        ):
            lines = self.default_headers()
            lines.extend([f"{name}: {value}\r\n" for name, value in self.headers])
            lines.append("\r\n")
            self.headers_sent = True
            self.sent = len(arg)
            util.write(self.sock, "".join(lines).encode("latin-1") + arg)
            return
        super().write(arg)


def install() -> bool:
    """Make gunicorn build :class:`OneWriteResponse` (call in the master, before forking);
    False, and nothing changed, when this gunicorn's response lacks what it relies on."""
    needed = (
        "headers_sent",
        "chunked",
        "response_length",
        "_omits_body",
        "default_headers",
        "upgrade",
        "should_close",
        "version",
        "status",
    )
    probe = wsgi.Response.__init__.__code__.co_names + tuple(vars(wsgi.Response))
    if not all(name in probe for name in needed):
        return False
    wsgi.Response = OneWriteResponse
    return True


def install_peer_cache(size: int = 4096) -> bool:
    """Cache gunicorn's allow-list check by (address, allow list); False, and nothing changed,
    when this gunicorn has no such function."""
    check: Callable[[str, Sequence[str], Any], bool] | None = getattr(
        message, "_ip_in_allow_list", None
    )
    if check is None or hasattr(check, "cache_info"):
        return check is not None

    @functools.lru_cache(maxsize=size)
    def cached(ip_str: str, allow: tuple[str, ...], networks: tuple[Any, ...]) -> bool:
        return check(ip_str, list(allow), list(networks))

    def allowed(ip_str: str, allow_list: Sequence[str], networks: Any) -> bool:
        return cached(ip_str, tuple(allow_list), tuple(networks or ()))

    allowed.cache_info = cached.cache_info  # type: ignore[attr-defined]
    message._ip_in_allow_list = allowed
    return True
