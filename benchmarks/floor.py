"""The twine floors: HTTP servers on 127.0.0.1 that take an upload's body and do nothing else with it.

``python -m benchmarks.floor PORT`` reads the body and discards it: timing
``twine upload`` against it gives twine's own time for a file (hashing,
encoding, sending), which an index's upload time is compared with.

``python -m benchmarks.floor PORT --s3 ENDPOINT BUCKET`` is the floor of an
index that stores in that S3 (moto's server in the benchmark): the raw body,
neither parsed nor hashed nor spooled, goes to the bucket as a multipart
upload while it arrives (8 MiB parts from memory, at most 4 in flight, as
CloudPyPI's streaming writer sends them) and is completed when the body ends.
What an index spends over this floor is its own work; what this floor spends
over the discarding one is the store's (on the same cores, for moto).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BLOCK = 1024 * 1024
PART = 8 * 1024 * 1024
IN_FLIGHT = 4


class Discard(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    #: (boto3 client, bucket) for the S3 floor; None discards.
    s3: tuple[Any, str] | None = None

    def do_GET(self) -> None:  # readiness probe
        self._answer(b"floor\n")

    def do_POST(self) -> None:
        left = int(self.headers.get("Content-Length") or 0)
        if self.s3 is not None:
            self._relay(left, *self.s3)
            self._answer(b"OK\n")
            return
        buffer = bytearray(BLOCK)
        view = memoryview(buffer)
        while left > 0:
            n = self.rfile.readinto(view[: min(BLOCK, left)])
            if not n:
                break
            left -= n
        self._answer(b"OK\n")

    def _relay(self, left: int, client: Any, bucket: str) -> None:
        """The body into ``bucket`` as one multipart upload, parts sent as they fill."""
        key = f"floor/{uuid.uuid4().hex}"
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        parts: list[dict[str, Any]] = []
        pending: deque = deque()

        def send(number: int, body: bytes) -> dict[str, Any]:
            answer = client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )
            return {"PartNumber": number, "ETag": answer["ETag"]}

        with ThreadPoolExecutor(IN_FLIGHT) as pool:

            def queue(body: bytes) -> None:
                pending.append(pool.submit(send, len(parts) + len(pending) + 1, body))
                while len(pending) > IN_FLIGHT:
                    parts.append(pending.popleft().result())

            buffer = bytearray()
            while left > 0:
                block = self.rfile.read(min(BLOCK, left))
                if not block:
                    break
                left -= len(block)
                buffer += block
                while len(buffer) >= PART:
                    queue(bytes(buffer[:PART]))
                    del buffer[:PART]
            if buffer or not (parts or pending):
                queue(bytes(buffer))
            while pending:
                parts.append(pending.popleft().result())
        client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--s3", nargs=2, metavar=("ENDPOINT", "BUCKET"))
    args = parser.parse_args()
    if args.s3:
        sys.path.insert(0, ".")
        from storage.s3 import make_client  # the client CloudPyPI builds for a custom endpoint

        endpoint, bucket = args.s3
        client = make_client(
            endpoint_url=endpoint, region="us-east-1", access_key_id="testing", secret_access_key="testing"
        )
        Discard.s3 = (client, bucket)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Discard)
    server.serve_forever()


if __name__ == "__main__":
    main()
