"""gunicorn's response, sending the head and the first body bytes in one write.

gunicorn writes a response's status line and headers with one ``sendall`` and
each body chunk with another, so an index page (a few KB, one chunk) costs two
system calls and two TCP segments, and the client two wake-ups to read it.
Here the head is held until the first body bytes and sent with them: joined to
a small chunk, and beside a large one in one ``sendmsg`` (no copy of the body;
a 700 KB JSON page leaves in one system call and the client reads head and body
in one wake-up). A file sent with ``sendfile``, or a response with no body,
sends the head alone, first. The ``Date`` header is formatted once a
second, not once a response.

A request whose body the application left unread, more of it than gunicorn
drains before it reuses a connection (or a body the client holds back for a
``100 Continue`` it was never sent), ends its connection after the answer:
the head then says ``Connection: close``, not ``keep-alive`` (a client that
believed it would send its next request into a closed connection). Everything
else is gunicorn's.
"""

from __future__ import annotations

import time
from typing import Any

from gunicorn import util
from gunicorn.http import parser, wsgi
from gunicorn.http.body import ChunkedReader, LengthReader

#: The most of an unread body gunicorn reads and discards to reuse the connection (more: it closes).
DRAIN_MAX = getattr(parser, "_DRAIN_MAX_BYTES", 64 * 1024)
#: The attribute of gunicorn's request naming its pending ``100 Continue`` (pypi.server.worker):
#: an object whose ``sent`` tells whether the client was asked for the body.
PENDING_CONTINUE = "cloudpypi_continue"

#: Body chunks up to this size are joined to the head (larger ones go beside it, in one sendmsg).
COALESCE_MAX = 256 * 1024


class _HeadFirst:
    """A socket stand-in that holds the first write (the head) and puts it before the next."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._head: bytes | None = None
        self._held = False

    def sendall(self, data: bytes) -> None:
        if not self._held:  # the first write is always the head (send_headers)
            self._held = True
            self._head = bytes(data)
            return
        head, self._head = self._head, None
        if head is None:
            self._sock.sendall(data)
        elif len(data) <= COALESCE_MAX:
            self._sock.sendall(head + data)
        else:  # one system call for both, without copying the body into one buffer with the head
            sent = self._sock.sendmsg([head, data])
            if sent < len(head):
                self._sock.sendall(memoryview(head)[sent:])
                sent = len(head)
            if sent - len(head) < len(data):
                self._sock.sendall(memoryview(data)[sent - len(head) :])

    def flush(self) -> None:
        head, self._head = self._head, None
        if head is not None:
            self._sock.sendall(head)

    def __getattr__(self, name: str) -> Any:
        # Anything else (fileno for sendfile, settimeout, ...) goes to the socket, the head first.
        self.flush()
        return getattr(self._sock, name)


def body_left_unread(req: Any) -> bool:
    """Whether ``req``'s body is (or may be) still on the connection, more than gunicorn drains
    before it reads the next request: the connection cannot carry another one."""
    reader = getattr(getattr(req, "body", None), "reader", None)
    if isinstance(reader, LengthReader):
        left = reader.length
    elif isinstance(reader, ChunkedReader):
        left = None if reader.parser is not None else 0  # not read to its last chunk: unknown
    else:
        return False
    if left == 0:
        return False
    expect = getattr(req, PENDING_CONTINUE, None)
    if expect is not None and not expect.sent:
        return True  # the client holds the body back until asked, and never will be
    return left is None or left > DRAIN_MAX


class Response(wsgi.Response):
    """gunicorn's ``Response`` with the head sent together with the first body bytes, and
    ``Connection: close`` when the request's body was left unread."""

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        if body_left_unread(self.req):
            self.force_close()  # before the head is made: it says close, and gthread then closes
        if not isinstance(self.sock, _HeadFirst):
            self.sock = _HeadFirst(self.sock)
        super().send_headers()

    def close(self) -> None:
        super().close()
        if isinstance(self.sock, _HeadFirst):
            self.sock.flush()  # a response without body bytes (HEAD, 304, an empty page)


_format_date = util.http_date
#: (second, its HTTP date): replaced whole, so threads never see a half-updated pair.
_date: tuple[int, str] = (0, "")


def http_date(timestamp: float | None = None) -> str:
    """gunicorn's ``util.http_date``, formatting the current second's date only once."""
    global _date
    if timestamp is not None:
        return _format_date(timestamp)
    now = int(time.time())
    second, text = _date
    if second != now:
        text = _format_date(now)
        _date = (now, text)
    return text


def install() -> None:
    """Make gunicorn build this ``Response`` for every request of this process (a worker's start)."""
    wsgi.Response = Response
    util.http_date = http_date
