"""The worker's side of answering in the event loop (pypi.inline): which requests qualify,
and a socket stand-in that holds a response until the loop sends what the socket takes.

A request qualifies when its whole head is in the socket's buffer already, it is a
GET or HEAD under ``/simple/`` or ``/pypi/`` (the JSON API) with nothing after the head (no body, no second
request pipelined behind it) and no header that makes the server do more than
answer (``Expect``, ``Upgrade``, a body's ``Content-Length``/``Transfer-Encoding``).
Reading it then cannot block, and gunicorn's parser reads it as it would on a thread.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

#: The largest request head answered in the loop (gunicorn's parser reads 8 KiB at a time).
HEAD_MAX = 8192
#: The paths whose pages the application may answer inline (pypi.inline.capable views).
PREFIXES = ("/simple/", "/pypi/")
_METHODS = tuple(f"{method} {prefix}".encode() for method in ("GET", "HEAD") for prefix in PREFIXES)
_REFUSED = (b"\ncontent-length:", b"\ntransfer-encoding:", b"\nexpect:", b"\nupgrade:")


def qualifies(data: bytes) -> bool:
    """Whether ``data`` (everything the socket holds) is exactly one request head the loop may answer."""
    if not data.startswith(_METHODS) or len(data) > HEAD_MAX:
        return False
    end = data.find(b"\r\n\r\n")
    if end < 0 or end + 4 != len(data):
        return False  # incomplete, or more follows (a body, a pipelined request)
    line_end = data.find(b"\r\n")
    if not data[:line_end].endswith((b" HTTP/1.1", b" HTTP/1.0")):
        return False
    head = data.lower()
    return not any(name in head for name in _REFUSED)


def answerable(method: str, path: str) -> bool:
    """Whether a request with this method and path is of a kind the loop may answer (its
    connection's next one likely is too)."""
    return method in ("GET", "HEAD") and path.startswith(PREFIXES)


def waiting_head(sock: socket.socket) -> bytes | None:
    """What the (non-blocking) socket holds, without taking it; None when it holds nothing
    yet, b"" at end of file."""
    try:
        return sock.recv(HEAD_MAX + 1, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return None


class Collected:
    """A socket stand-in for gunicorn's Response: it keeps every write (no copy: the page's own
    chunks) so that nothing is sent while the application may still refuse the request, and
    so that the loop then sends only what the socket takes at once."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.chunks: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.chunks.append(data)

    def settimeout(self, _timeout: float | None) -> None:
        pass  # the real socket stays non-blocking while the loop holds it

    def __getattr__(self, name: str) -> Any:
        if name in ("fileno", "sendfile"):
            # No file is sent from the loop; refusing fileno makes gunicorn write chunks instead.
            raise AttributeError(name)
        return getattr(self._sock, name)


def send_now(sock: socket.socket, chunks: Iterable[bytes]) -> list[bytes]:
    """Send ``chunks`` on the non-blocking ``sock`` as far as it takes them at once; the rest
    (empty when everything went). OSError when the connection is gone."""
    pending = [c for c in chunks if c]
    while pending:
        first = pending[0]
        try:
            sent = sock.send(first)
        except (BlockingIOError, InterruptedError):
            return pending
        if sent < len(first):
            pending[0] = memoryview(first)[sent:]
            return pending
        pending.pop(0)
    return pending
