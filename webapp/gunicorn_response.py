"""gunicorn's HTTP/1 response, with a whole body sent in the same write as its headers.

gunicorn writes the status line and headers, then each body chunk, with a write each: two
``send`` calls (and two trips through gevent's socket) for a 202 of a hundred bytes. When the
WSGI app hands over its whole body in one piece, as every JSON answer of this service does,
:class:`OneWriteResponse` sends headers and body together. Anything else (several pieces,
chunked encoding, a body a HEAD request must not get) takes gunicorn's own path unchanged.
"""

from __future__ import annotations

from typing import Any

from gunicorn import util
from gunicorn.http import wsgi

__all__ = ["OneWriteResponse", "install"]


class OneWriteResponse(wsgi.Response):
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
    needed = ("headers_sent", "chunked", "response_length", "_omits_body", "default_headers")
    probe = wsgi.Response.__init__.__code__.co_names + tuple(vars(wsgi.Response))
    if not all(name in probe for name in needed):
        return False
    wsgi.Response = OneWriteResponse
    return True
