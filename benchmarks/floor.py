"""The twine floor: an HTTP server on 127.0.0.1 that reads an upload's body and discards it.

``python -m benchmarks.floor PORT``. Timing ``twine upload`` against it gives
twine's own time for a file (hashing, encoding, sending), which an index's
upload time is compared with.
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BLOCK = 1024 * 1024


class Discard(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # readiness probe
        self._answer(b"floor\n")

    def do_POST(self) -> None:
        left = int(self.headers.get("Content-Length") or 0)
        buffer = bytearray(BLOCK)
        view = memoryview(buffer)
        while left > 0:
            n = self.rfile.readinto(view[: min(BLOCK, left)])
            if not n:
                break
            left -= n
        self._answer(b"OK\n")

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Discard)
    server.serve_forever()


if __name__ == "__main__":
    main()
