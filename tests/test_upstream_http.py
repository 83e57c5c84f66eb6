"""The upstream client's own HTTP/1.1 reading: bodies framed by Content-Length, by chunks or
by the connection's end, kept connections reused only after a whole body, and a short or
malformed answer an UpstreamError, never a hang or a wrong file. The upstream here is a
raw socket server answering each request with scripted bytes."""

from __future__ import annotations

import hashlib
import os
import socket
import threading

import pytest

from pypi.upstream.client import UpstreamClient, UpstreamError, UpstreamUnavailable


class _Scripted:
    """Answers the n-th request (on whatever connection) with ``answers[n]`` (bytes), then
    keeps the connection open unless the answer's entry is ``(bytes, "close")``; notes each
    request's head and the connection (a number) it came on."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.seen: list[tuple[int, bytes]] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conn_no = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn_no += 1
            threading.Thread(target=self._one, args=(conn, conn_no), daemon=True).start()

    def _one(self, conn, conn_no):
        f = conn.makefile("rb")
        with conn:
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = f.readline()
                    if not line:
                        return
                    head += line
                self.seen.append((conn_no, head))
                answer = self.answers.pop(0)
                close = isinstance(answer, tuple)
                conn.sendall(answer[0] if close else answer)
                if close:
                    return

    def stop(self):
        self.sock.close()


@pytest.fixture
def serve():
    servers = []

    def start(*answers):
        servers.append(_Scripted(answers))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def client(server):
    return UpstreamClient(server.url + "/simple/", connections=1, timeout=5)


def chunked(data: bytes, size: int) -> bytes:
    parts = [
        b"%x;ext=1\r\n%s\r\n" % (len(data[i : i + size]), data[i : i + size])
        for i in range(0, len(data), size)
    ]
    return b"".join(parts) + b"0\r\nX-Trailer: t\r\n\r\n"


def test_content_length_chunked_and_connection_end_bodies(serve, tmp_path):
    body = os.urandom(300_000)
    server = serve(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body, 70_000),
        (b"HTTP/1.0 200 OK\r\n\r\n" + body, "close"),
    )
    c = client(server)
    for _ in range(3):
        got = c.download(server.url + "/f.whl", str(tmp_path))
        with open(got.path, "rb") as f:
            assert f.read() == body
        assert got.size == len(body) and got.sha256 == hashlib.sha256(body).hexdigest()
    conns = [n for n, _head in server.seen]
    assert conns == [1, 1, 1]  # the first two bodies were read whole: the connection was kept
    head = server.seen[0][1].decode()
    assert (
        head.startswith("GET /f.whl HTTP/1.1\r\n")
        and f"Host: 127.0.0.1:{server.url.rsplit(':', 1)[1]}" in head
    )


def test_headers_a_folded_one_and_100_continue(serve):
    server = serve(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.pypi.simple.v1+json\r\n"
        b"X-PyPI-Last-Serial: 42\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nok"
    )
    body, _url, headers = client(server)._get(server.url + "/simple/x/")
    # An obsolete folded line (RFC 9112 5.2) is read as one header, not as the body.
    assert body == b"ok" and headers["x-pypi-last-serial"] == "42"
    assert " ".join(headers["x-folded"].split()) == "a b"


def test_a_connection_whose_body_was_not_read_whole_is_not_reused(serve):
    server = serve(
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100_000,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    c = client(server)
    with pytest.raises(UpstreamError) as exc:
        c.fetch_bytes(server.url + "/missing")
    assert exc.value.status == 404
    assert c.fetch_bytes(server.url + "/there") == b"ok"
    assert [n for n, _head in server.seen] == [1, 2]  # the 404's long body was not drained


@pytest.mark.parametrize(
    "answer",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "close"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "close"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "close"),
        (b"not http at all\r\n\r\n", "close"),
        (b"", "close"),
    ],
)
def test_a_short_or_malformed_answer_is_unavailable_and_leaves_no_file(serve, tmp_path, answer):
    server = serve(answer, answer)  # the client tries once more only on a kept connection
    with pytest.raises(UpstreamUnavailable):
        client(server).download(server.url + "/f.whl", str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_a_request_target_with_control_characters_is_refused(serve):
    server = serve()
    with pytest.raises(UpstreamUnavailable):
        client(server).fetch_bytes(server.url + "/a\x01b")
    assert server.seen == []
