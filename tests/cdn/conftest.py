"""A local HTTP server that records every request: the stand-in for Fastly's API and Varnish nodes."""

from __future__ import annotations

import http.server
import threading
from dataclasses import dataclass, field

import pytest


@dataclass
class Recorded:
    method: str
    path: str
    #: Header names in lower case.
    headers: dict[str, str]


@dataclass
class Recorder:
    """Requests received (``.requests``); answers ``status`` with ``body``."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    status: int = 200
    body: bytes = b'{"status": "ok"}'


def _handler(recorder: Recorder) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            recorder.requests.append(
                Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
            )
            self.send_response(recorder.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(recorder.body)))
            self.end_headers()
            self.wfile.write(recorder.body)

        do_POST = do_PURGE = do_BAN = do_GET = _record

        def log_message(self, *args) -> None:
            pass

    return Handler


@pytest.fixture
def recorder():
    """A Recorder listening on 127.0.0.1; stopped afterwards."""
    rec = Recorder()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(rec))
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()
