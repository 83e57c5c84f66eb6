"""A hostile upstream index on 127.0.0.1: every path answered by a handler a test writes,
down to the bytes on the socket (lying headers, endless or trickling bodies, bombs).

``routes`` maps a path (``/simple/evil/``) to ``(status, headers, body)`` or to a callable
given the ``BaseHTTPRequestHandler`` (it writes what it wants; ``send_head`` helps). A path
not in ``routes`` is a 404. Every request is noted in ``seen`` as (method, path, body).
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

Route = tuple[int, dict[str, str], bytes] | Callable[[http.server.BaseHTTPRequestHandler], None]


class HostileUpstream:
    def __init__(self, routes: dict[str, Route] | None = None) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.seen: list[tuple[str, str, bytes]] = []
        #: Set when the server stops: trickling handlers end.
        self.stopping = threading.Event()
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                upstream.seen.append((self.command, self.path, body))
                route = upstream.routes.get(self.path)
                if route is None:
                    route = (404, {}, b"not here")
                try:
                    if callable(route):
                        route(self)
                    else:
                        status, headers, data = route
                        self.send_response(status)
                        for k, v in headers.items():
                            self.send_header(k, v)
                        if "Content-Length" not in headers:
                            self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # a client hanging up is the point
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.simple = self.url + "/simple/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def paths(self) -> list[str]:
        return [p for _m, p, _b in self.seen]

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> HostileUpstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- handlers --------------------------------------------------------------
    def trickle(
        self, head: bytes, byte: bytes = b" ", every: float = 0.5, *, status_line: bool = False
    ) -> Callable[[http.server.BaseHTTPRequestHandler], None]:
        """Send ``head`` (raw bytes), then one ``byte`` every ``every`` seconds until stopped
        (a slow-loris upstream). With ``status_line`` the head is only the status line: the
        headers themselves trickle."""

        def handler(h: http.server.BaseHTTPRequestHandler) -> None:
            h.close_connection = True
            h.wfile.write(head)
            h.wfile.flush()
            while not self.stopping.wait(every):
                h.wfile.write(byte)
                h.wfile.flush()

        return handler

    def endless(
        self, headers: dict[str, str], chunk: bytes = b"<a>x</a>" * 8192
    ) -> Callable[[http.server.BaseHTTPRequestHandler], None]:
        """A chunked 200 whose body never ends (as fast as the client reads it)."""

        def handler(h: http.server.BaseHTTPRequestHandler) -> None:
            h.close_connection = True
            h.send_response(200)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
            while not self.stopping.is_set():
                h.wfile.write(frame)

        return handler

    def stream(
        self, status: int, headers: dict[str, str], parts: Callable[[], Iterable[bytes]]
    ) -> Callable[[http.server.BaseHTTPRequestHandler], None]:
        """A response whose body is written part by part (headers as given: the test
        chooses Content-Length or none, then the connection closes)."""

        def handler(h: http.server.BaseHTTPRequestHandler) -> None:
            h.close_connection = True
            h.send_response(status)
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
            for part in parts():
                if self.stopping.is_set():
                    return
                h.wfile.write(part)

        return handler


def timed(func: Callable[[], Any]) -> tuple[Any, float]:
    """(func(), seconds it took)."""
    started = time.monotonic()
    result = func()
    return result, time.monotonic() - started
