"""``cloudpypi serve`` under gunicorn, driven with raw sockets: graceful stop with an upload in
flight, ``Expect: 100-continue`` answered only once the credentials are good, and server-made
errors as private as the application's."""

from __future__ import annotations

import base64
import os
import signal
import socket
import time
import urllib.request

import pytest

from tests.dists import make_wheel
from tests.e2e.clients import PASSWORD
from tests.services.live_server import LiveServer, cloudpypi, start_server, write_config
from tests.uploading import multipart_upload

pytestmark = pytest.mark.e2e


def auth_header(user: str = "alice", password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def upload_form(path: str, name: str, version: str) -> tuple[str, bytes]:
    """(Content-Type, body) of twine's multipart upload of the wheel at ``path``."""
    return multipart_upload(path, name, version)


def request_head(
    server: LiveServer, length: int, content_type: str, *, authorization: str | None, expect: bool
) -> bytes:
    lines = [
        "POST /legacy/ HTTP/1.1",
        f"Host: {server.url[7:]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {length}",
    ]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    if expect:
        lines.append("Expect: 100-continue")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(server: LiveServer) -> socket.socket:
    host, port = server.url[7:].split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def read_head(sock: socket.socket) -> bytes:
    """One response head (up to the blank line), read a byte at a time so nothing after it is taken."""
    data = b""
    while not data.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            break
        data += byte
    return data


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length: its head, its body read to the end (the
    connection stays usable for the next request); the head."""
    head = read_head(sock)
    left = int(header(head, "Content-Length") or 0)
    while left:
        chunk = sock.recv(left)
        if not chunk:
            break
        left -= len(chunk)
    return head


def header(head: bytes, name: str) -> str | None:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gunicorn")
    config = write_config(
        str(folder / "config.ini"),
        {
            "server": {
                "data_dir": str(folder / "data"),
                "workers": "1",
                "threads": "4",
                "graceful_timeout": "30",
            },
            "database": {"url": f"sqlite:///{folder}/index.sqlite3"},
            "webui": {"max_upload_size": "10M"},
        },
    )
    cloudpypi("adduser", "alice", "--password-stdin", config=config, stdin=PASSWORD + "\n")
    server = start_server(config)
    yield folder, server
    server.stop()


def spool_files(folder) -> list[str]:
    tmp = folder / "data" / "tmp"
    return sorted(os.listdir(tmp)) if tmp.is_dir() else []


@pytest.mark.parametrize("authorization, status", [(None, 401), (auth_header(password="wrong"), 403)])
def test_refused_upload_is_answered_before_the_body_is_sent(index, authorization, status):
    folder, server = index
    before = spool_files(folder)
    with connect(server) as sock:
        sock.sendall(
            request_head(
                server, 9_000_000, "multipart/form-data; boundary=x", authorization=authorization, expect=True
            )
        )
        head = read_head(sock)  # no byte of the body was sent
        assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
        assert header(head, "Cache-Control") == "private, no-store"
        assert b"100 Continue" not in head
        rest = read_all(sock)  # the server closes: it does not wait for a body to discard
        assert b"Invalid or non-existent authentication information." in rest
    assert spool_files(folder) == before


def test_authenticated_upload_gets_100_continue_then_200(index, tmp_path):
    folder, server = index
    wheel = make_wheel(str(tmp_path), "expecting", "1.0")
    content_type, body = upload_form(wheel, "expecting", "1.0")
    with connect(server) as sock:
        sock.sendall(request_head(server, len(body), content_type, authorization=auth_header(), expect=True))
        assert read_head(sock) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        head = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200 "), head + read_all(sock)
    with urllib.request.urlopen(server.url + "/simple/expecting/", timeout=10) as r:
        assert "expecting-1.0-py3-none-any.whl" in r.read().decode()


def test_too_large_upload_is_413_before_the_body(index):
    _, server = index
    with connect(server) as sock:
        sock.sendall(
            request_head(
                server,
                500_000_000,
                "multipart/form-data; boundary=x",
                authorization=auth_header(),
                expect=True,
            )
        )
        head = read_head(sock)
        assert head.startswith(b"HTTP/1.1 413 "), head
        assert header(head, "Cache-Control") == "private, no-store"


@pytest.mark.parametrize(
    "raw, status",
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n", 431),
    ],
)
def test_errors_made_by_the_server_are_private(index, raw, status):
    _, server = index
    with connect(server) as sock:
        sock.sendall(raw)
        response = read_all(sock)
    head = response.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), response[:300]
    assert header(head, "Cache-Control") == "private, no-store"
    assert header(head, "Content-Type") == "text/plain; charset=utf-8"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_stop_or_reload_lets_an_upload_in_flight_finish(tmp_path, signum):
    config = write_config(
        str(tmp_path / "config.ini"),
        {
            "server": {
                "data_dir": str(tmp_path / "data"),
                "workers": "2",
                "threads": "2",
                "graceful_timeout": "30",
            },
            "database": {"url": f"sqlite:///{tmp_path}/index.sqlite3"},
        },
    )
    cloudpypi("adduser", "alice", "--password-stdin", config=config, stdin=PASSWORD + "\n")
    wheel = make_wheel(str(tmp_path), "inflight", "1.0", extra_bytes=200_000)
    content_type, body = upload_form(wheel, "inflight", "1.0")
    servers = [start_server(config)]
    try:
        server = servers[0]
        with connect(server) as sock:
            sock.sendall(
                request_head(server, len(body), content_type, authorization=auth_header(), expect=False)
            )
            sock.sendall(body[:1000])
            time.sleep(0.5)  # a worker is reading the body
            server.proc.send_signal(signum)
            time.sleep(1.0)  # ... and is told to stop while the body is still arriving
            step = len(body) // 8 + 1
            for start in range(1000, len(body), step):
                sock.sendall(body[start : start + step])
                time.sleep(0.2)
            head = read_head(sock)
            assert head.startswith(b"HTTP/1.1 200 "), head + read_all(sock) + server.log().encode()
        if signum == signal.SIGTERM:
            assert server.proc.wait(timeout=30) == 0
            servers.append(start_server(config))  # the stored upload is served by the next server
        else:
            assert "Hang up" in server.log()
        server = servers[-1]
        path = "/simple/inflight/"
        with urllib.request.urlopen(server.url + path, timeout=10) as r:
            page = r.read().decode()
        href = page.split('href="', 1)[1].split("#", 1)[0]
        with urllib.request.urlopen(urllib.request.urljoin(server.url + path, href), timeout=10) as r:
            with open(wheel, "rb") as f:
                assert r.read() == f.read()
    finally:
        for server in servers:
            server.stop()


def test_keep_alive_connections_beyond_the_threads_are_all_answered(index):
    """Threads answer their connection's next request themselves, and give way: six keep-alive
    connections on four threads, each used in turn, get every answer (GET, HEAD, 304)."""
    import http.client

    _, server = index
    host, port = server.url[7:].split(":")
    conns = [http.client.HTTPConnection(host, int(port), timeout=10) for _ in range(6)]
    try:
        etag = None
        for round_ in range(5):
            for conn in conns:
                conn.request("GET", "/simple/")
                r = conn.getresponse()
                body = r.read()
                assert r.status == 200 and body.startswith(b"<!DOCTYPE html>")
                assert int(r.headers["Content-Length"]) == len(body)
                assert r.headers["Connection"] != "close"
                etag = r.headers["ETag"]
            conn = conns[round_]
            conn.request("HEAD", "/simple/")
            r = conn.getresponse()
            assert r.status == 200 and r.read() == b""
            conn.request("GET", "/simple/", headers={"If-None-Match": etag})
            r = conn.getresponse()
            assert r.status == 304 and r.read() == b""
    finally:
        for conn in conns:
            conn.close()


def _upload(server: LiveServer, tmp_path, name: str, version: str) -> None:
    wheel = make_wheel(str(tmp_path), name, version)
    content_type, body = upload_form(wheel, name, version)
    with connect(server) as sock:
        sock.sendall(request_head(server, len(body), content_type, authorization=auth_header(), expect=False))
        sock.sendall(body)
        head = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200 "), head + read_all(sock)


def test_kept_alive_connections_see_an_upload_at_once_and_a_slow_client_holds_no_one(index, tmp_path):
    """The worker's event loop answers kept-alive /simple/ requests from pages rendered for the
    current serial (pypi.inline): an upload shows on the very next request of every connection,
    and a client whose request head never completes waits on a thread, not in the loop."""
    import http.client

    _, server = index
    _upload(server, tmp_path, "looped", "1.0")
    host, port = server.url[7:].split(":")
    conns = [http.client.HTTPConnection(host, int(port), timeout=10) for _ in range(3)]
    slow = connect(server)
    try:
        for _ in range(5):  # rendered once, then answered from the page held
            for conn in conns:
                conn.request("GET", "/simple/looped/", headers={"Accept-Encoding": "gzip"})
                r = conn.getresponse()
                assert r.status == 200 and r.headers["Content-Encoding"] == "gzip" and r.read()
        slow.sendall(b"GET /simple/looped/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(slow).startswith(b"HTTP/1.1 200 ")
        slow.sendall(b"GET /simple/looped/ HTTP/1.1\r\nHost: x\r\n")  # kept alive, and nothing more
        _upload(server, tmp_path, "looped", "2.0")
        for conn in conns:
            conn.request("GET", "/simple/looped/")
            r = conn.getresponse()
            body = r.read().decode()
            assert r.status == 200 and r.headers["Connection"] != "close"
            assert "looped-2.0-py3-none-any.whl" in body and "looped-1.0-py3-none-any.whl" in body
            conn.request("HEAD", "/simple/looped/")
            r = conn.getresponse()
            assert r.status == 200 and r.read() == b"" and int(r.headers["Content-Length"]) == len(body)
        slow.sendall(b"\r\n")  # the slow client's request completes: it is answered too
        head = read_head(slow)
        assert head.startswith(b"HTTP/1.1 200 "), head
    finally:
        slow.close()
        for conn in conns:
            conn.close()


@pytest.mark.parametrize(
    "raw, status",
    [
        (b"GET /simple/ HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
        (b"GET /simple/ HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n", 431),
    ],
)
def test_a_bad_request_read_by_the_event_loop_gets_the_servers_private_error(index, raw, status):
    """A kept-alive connection's next head that qualifies for the loop but that gunicorn's parser
    refuses gets the same private error page as on a thread, and the connection closes."""
    _, server = index
    with connect(server) as sock:
        sock.sendall(b"GET /simple/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        sock.sendall(raw)
        response = read_all(sock)
    head = response.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), response[:300]
    assert header(head, "Cache-Control") == "private, no-store"


def test_a_file_download_and_a_range_carry_their_content_length_not_chunks(index, tmp_path):
    """A stored file goes out with its Content-Length (a client checks it, shows progress,
    and a mirror refuses a download cut short of it), never as chunks; a range too."""
    import http.client
    import json

    _, server = index
    _upload(server, tmp_path, "lengthy", "1.0")
    data = open(make_wheel(str(tmp_path), "lengthy", "1.0"), "rb").read()
    host, port = server.url[7:].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/simple/lengthy/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        url = json.loads(conn.getresponse().read())["files"][0]["url"]
        conn.request("GET", url)
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200 and body == data
        assert r.headers["Transfer-Encoding"] is None and int(r.headers["Content-Length"]) == len(data)
        conn.request("GET", url, headers={"Range": "bytes=10-19"})
        r = conn.getresponse()
        assert r.status == 206 and r.read() == data[10:20]
        assert r.headers["Transfer-Encoding"] is None and r.headers["Content-Length"] == "10"
    finally:
        conn.close()
