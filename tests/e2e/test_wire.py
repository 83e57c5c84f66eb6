"""What a client sees on the socket from ``cloudpypi serve`` (gunicorn and our worker), read
with a strict HTTP/1.1 parser: every answer framed by a Content-Length that matches its body
(no chunks), HEAD with GET's headers and no body, 304 without a body, 206/416 whose
Content-Range agrees, the connection usable after every answer (pipelined, answered in the
event loop, after an error), the cache policy's headers, and errors with their message in the
status line and the body. WebTest cannot see any of this: it re-frames the body itself."""

from __future__ import annotations

import base64
import gzip
import json
import socket
import time
from dataclasses import dataclass

import pytest

from tests.dists import make_wheel
from tests.e2e.clients import PASSWORD
from tests.services.live_server import cloudpypi, start_server, write_config
from tests.uploading import multipart_upload

pytestmark = pytest.mark.e2e

AUTH = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
BAD_AUTH = "Basic " + base64.b64encode(b"alice:wrong").decode()
JSON = "application/vnd.pypi.simple.v1+json"
GZIP = ("Accept-Encoding", "gzip")
PUBLIC_INDEX = "max-age=600, public"
PUBLIC_HTML = "max-age=60, public"
MISSING = "max-age=60, public"
FILE = "max-age=365000000, immutable, public"
PRIVATE = "private, no-store"
#: Headers that may differ between two answers to the same request.
VOLATILE = {"date"}


@dataclass
class Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def get(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None

    def fixed_headers(self) -> list[tuple[str, str]]:
        return [(k.lower(), v) for k, v in self.headers if k.lower() not in VOLATILE]


class Wire:
    """One client connection: raw requests out, strictly framed answers in."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    @staticmethod
    def request(method: str, path: str, headers=(), body: bytes = b"", version: str = "HTTP/1.1") -> bytes:
        lines = [f"{method} {path} {version}", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers)]
        if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers):
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    def send(self, method: str, path: str, headers=(), body: bytes = b"") -> None:
        self.sock.sendall(self.request(method, path, headers, body))

    def ask(self, method: str, path: str, headers=(), body: bytes = b"") -> Answer:
        self.send(method, path, headers, body)
        return self.read(method)

    def read(self, method: str) -> Answer:
        """One answer, framed as RFC 9112 section 6.3 says; it must carry a Content-Length
        (or none where there is no body) and never Transfer-Encoding."""
        line = self.file.readline()
        assert line, "the server closed the connection instead of answering"
        version, status, reason = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        assert version in ("HTTP/1.1", "HTTP/1.0"), line
        headers = []
        while (raw := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = raw.decode("latin-1").partition(":")
            headers.append((name.strip(), value.strip()))
        answer = Answer(int(status), reason, headers, b"")
        names = [name.lower() for name, _ in headers]
        assert len(set(names)) == len(names), f"a header sent twice: {headers}"
        assert answer.get("Transfer-Encoding") is None, f"{method}: chunked, no length: {headers}"
        length = answer.get("Content-Length")
        if answer.status in (204, 304) or answer.status < 200:
            assert length is None, f"{answer.status} with a Content-Length"
        elif method != "HEAD":
            assert length is not None, f"{method} {answer.status}: no Content-Length: {headers}"
            answer.body = self.file.read(int(length))
            assert len(answer.body) == int(length), "the body ended before its Content-Length"
        return answer

    def closed_by_server(self, wait: float = 3.0) -> bool:
        """Whether the server closes the connection (end of file) with nothing more sent."""
        self.sock.settimeout(wait)
        try:
            return self.file.read(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(10)


@dataclass
class Index:
    port: int
    wheel: bytes
    file_url: str

    def connect(self) -> Wire:
        return Wire(self.port)


def _upload(port: int, path: str, name: str, version: str, description: str = "") -> None:
    content_type, body = multipart_upload(path, name, version, boundary="wire")
    if description:
        part = f'--wire\r\nContent-Disposition: form-data; name="description"\r\n\r\n{description}\r\n'
        body = part.encode() + body
    wire = Wire(port)
    try:
        answer = wire.ask("POST", "/legacy/", [("Content-Type", content_type), ("Authorization", AUTH)], body)
        assert answer.status == 200, answer
    finally:
        wire.close()


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Index:
    folder = tmp_path_factory.mktemp("wire")
    config = write_config(
        str(folder / "config.ini"),
        {
            "server": {"data_dir": str(folder / "data"), "workers": "1", "threads": "4"},
            "database": {"url": f"sqlite:///{folder}/index.sqlite3"},
            "webui": {"max_upload_size": "10M"},
        },
    )
    cloudpypi("adduser", "alice", "--password-stdin", config=config, stdin=PASSWORD + "\n")
    server = start_server(config)
    port = int(server.url.rsplit(":", 1)[1])
    try:
        # 600 KB: larger than what response.py joins to the head, and than one socket buffer.
        wheel = make_wheel(str(folder), "wired", "1.0", extra_bytes=600_000)
        _upload(port, wheel, "wired", "1.0")
        # Pages of 600-800 KB (its description): more than one write of the socket takes.
        words = ("alpha", "beta", "<b>gamma</b>", "delta &amp;")
        text = " ".join(f"{words[i % 4]}{i}" for i in range(60_000))
        _upload(port, make_wheel(str(folder), "bulky", "1.0"), "bulky", "1.0", description=text)
        wire = Wire(port)
        listing = json.loads(wire.ask("GET", "/simple/wired/", [("Accept", JSON)]).body)
        wire.close()
        yield Index(port, open(wheel, "rb").read(), listing["files"][0]["url"])
    finally:
        server.stop()


FILE_URL = "{file}"
#: (path, request headers, status, Cache-Control): every GET route, asked by GET then HEAD.
READS = [
    ("/simple/", (), 200, PUBLIC_INDEX),
    ("/simple/", (GZIP,), 200, PUBLIC_INDEX),
    ("/simple/", (("Accept", JSON), GZIP), 200, PUBLIC_INDEX),
    ("/simple", (), 301, PUBLIC_INDEX),
    ("/simple/wired/", (), 200, PUBLIC_INDEX),
    ("/simple/wired/", (GZIP,), 200, PUBLIC_INDEX),
    ("/simple/wired/", (("Accept", JSON),), 200, PUBLIC_INDEX),
    ("/simple/wired/", (("Accept", JSON), GZIP), 200, PUBLIC_INDEX),
    ("/simple/Wired/", (), 301, PUBLIC_INDEX),
    ("/simple/nope/", (), 404, MISSING),
    ("/pypi/wired/json", (), 200, PUBLIC_INDEX),
    ("/pypi/wired/json", (GZIP,), 200, PUBLIC_INDEX),
    ("/pypi/wired/1.0/json", (GZIP,), 200, PUBLIC_INDEX),
    ("/pypi/wired/9.9/json", (), 404, MISSING),
    ("/pypi/nope/json", (), 404, MISSING),
    (FILE_URL, (), 200, FILE),
    (FILE_URL, (GZIP,), 200, FILE),
    (FILE_URL + ".metadata", (), 200, FILE),
    ("/packages/no/such/file.whl", (), 404, PRIVATE),
    ("/project/wired/", (), 200, PUBLIC_HTML),
    ("/project/wired/1.0/", (GZIP,), 200, PUBLIC_HTML),
    ("/project/nope/", (), 404, MISSING),
    ("/", (), 200, PUBLIC_HTML),
    ("/nowhere", (), 404, PRIVATE),
    ("/simple/%ff/", (), 400, PRIVATE),
    ("/simple/wired/", (("Authorization", AUTH),), 200, PRIVATE),
    ("/pypi/wired/json", (("Authorization", AUTH), GZIP), 200, PRIVATE),
    ("/simple/", (("Authorization", AUTH),), 200, PRIVATE),
    ("/simple/wired/", (("Authorization", BAD_AUTH),), 401, PRIVATE),
]


def _path(index: Index, path: str) -> str:
    return path.replace(FILE_URL, index.file_url)


def check_error(answer: Answer) -> None:
    """An error carries its message in the status line and, the same, in a plain-text body."""
    if answer.status >= 400:
        assert answer.get("Content-Type") == "text/plain; charset=utf-8"
        assert answer.body.decode() == answer.reason + "\n"


@pytest.mark.parametrize("path, headers, status, cache_control", READS)
def test_every_read_is_framed_by_its_length_and_head_has_gets_headers(
    index, path, headers, status, cache_control
):
    wire = index.connect()
    try:
        get = wire.ask("GET", _path(index, path), headers)
        head = wire.ask("HEAD", _path(index, path), headers)
        again = wire.ask("GET", _path(index, path), headers)  # the connection is still in step
    finally:
        wire.close()
    assert (get.status, get.get("Cache-Control")) == (status, cache_control), get
    assert get.get("Connection") == "keep-alive"
    assert head.status == status and head.body == b""
    assert head.fixed_headers() == get.fixed_headers()
    assert again.body == get.body
    check_error(get)
    if get.get("Content-Encoding") == "gzip":
        assert "Accept-Encoding" in get.get("Vary").split(", ")
        assert any(k == "Accept-Encoding" for k, _ in headers)
    if path.startswith(FILE_URL) and not path.endswith(".metadata"):
        assert get.body == index.wheel


@pytest.mark.parametrize(
    "path, accept", [("/simple/", "text/html"), ("/simple/wired/", JSON), ("/pypi/wired/json", "")]
)
def test_gzip_is_the_same_page_under_another_etag(index, path, accept):
    wire = index.connect()
    try:
        plain = wire.ask("GET", path, [("Accept", accept)])
        packed = wire.ask("GET", path, [("Accept", accept), GZIP])
    finally:
        wire.close()
    assert plain.get("Content-Encoding") is None and packed.get("Content-Encoding") == "gzip"
    assert gzip.decompress(packed.body) == plain.body
    assert plain.get("ETag") != packed.get("ETag")
    assert "Accept-Encoding" in plain.get("Vary").split(", ")
    assert "Accept-Encoding" in packed.get("Vary").split(", ")


@pytest.mark.parametrize(
    "path, headers",
    [
        ("/simple/", ()),
        ("/simple/", (GZIP,)),
        ("/simple/wired/", (("Accept", JSON),)),
        ("/pypi/wired/json", (GZIP,)),
        (FILE_URL, ()),
    ],
)
def test_not_modified_has_no_body_and_the_200s_cache_headers(index, path, headers):
    wire = index.connect()
    try:
        full = wire.ask("GET", _path(index, path), headers)
        etag = full.get("ETag")
        conditional = [*headers, ("If-None-Match", f'"other", {etag}')]
        answers = [wire.ask(method, _path(index, path), conditional) for method in ("GET", "HEAD")]
        other = wire.ask("GET", _path(index, path), [*headers, ("If-None-Match", '"other"')])
    finally:
        wire.close()
    for answer in answers:
        assert answer.status == 304 and answer.body == b""
        assert answer.get("ETag") == etag
        for name in ("Cache-Control", "Vary", "Surrogate-Key"):
            assert answer.get(name) == full.get(name)
    assert other.status == 200 and other.body == full.body


@pytest.mark.parametrize(
    "ranges, status, content_range, part",
    [
        ("bytes=0-9", 206, "bytes 0-9/{size}", slice(0, 10)),
        ("bytes=-5", 206, "bytes {last5}-{last}/{size}", slice(-5, None)),
        ("bytes=100-", 206, "bytes 100-{last}/{size}", slice(100, None)),
        ("bytes={size}-", 416, "bytes */{size}", None),
    ],
)
def test_ranges_agree_with_their_content_range_and_length(index, ranges, status, content_range, part):
    size = len(index.wheel)
    fill = {"size": size, "last": size - 1, "last5": size - 5}
    wire = index.connect()
    try:
        answer = wire.ask("GET", index.file_url, [("Range", ranges.format(**fill))])
        head = wire.ask("HEAD", index.file_url, [("Range", ranges.format(**fill))])
        after = wire.ask("GET", "/simple/")
    finally:
        wire.close()
    assert answer.status == status and answer.get("Content-Range") == content_range.format(**fill)
    if part is None:
        assert answer.get("Cache-Control") == PRIVATE
        check_error(answer)
    else:
        assert answer.body == index.wheel[part]
        assert answer.get("Cache-Control") == FILE
    # RFC 9110 14.2: GET is the only method with ranges; HEAD answers for the whole file.
    assert head.status == 200 and head.get("Content-Length") == str(size)
    assert after.status == 200


XMLRPC_LIST = b"<?xml version='1.0'?><methodCall><methodName>list_packages</methodName></methodCall>"
CHUNKED = ("Transfer-Encoding", "chunked")


def chunked(data: bytes, size: int = 1000) -> bytes:
    """``data`` as a chunked request body."""
    parts = [
        b"%x\r\n%s\r\n" % (len(data[i : i + size]), data[i : i + size]) for i in range(0, len(data), size)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


XMLRPC_NOPE = b"<?xml version='1.0'?><methodCall><methodName>nope</methodName></methodCall>"
FORM = ("Content-Type", "multipart/form-data; boundary=x")
#: (method, path, headers, body, status, Cache-Control, text in the body).
POSTS = [
    ("POST", "/pypi", [("Content-Type", "text/xml")], XMLRPC_LIST, 200, PUBLIC_INDEX, b"wired"),
    ("POST", "/RPC2", [("Content-Type", "text/xml"), GZIP], XMLRPC_LIST, 200, PUBLIC_INDEX, b""),
    (
        "POST",
        "/RPC2",
        [("Content-Type", "text/xml"), ("Authorization", AUTH)],
        XMLRPC_LIST,
        200,
        PRIVATE,
        b"wired",
    ),
    (
        "POST",
        "/RPC2",
        [("Content-Type", "text/xml"), CHUNKED],
        chunked(XMLRPC_LIST, 20),
        200,
        PUBLIC_INDEX,
        b"wired",
    ),
    ("POST", "/RPC2", [("Content-Type", "text/xml")], XMLRPC_NOPE, 200, PUBLIC_INDEX, b"faultCode"),
    ("POST", "/RPC2", [("Content-Type", "text/xml")], b"<bad", 200, PUBLIC_INDEX, b"faultCode"),
    ("POST", "/RPC2", [("Content-Type", "text/plain")], b"x", 415, PRIVATE, b"Unsupported Media Type"),
    ("GET", "/RPC2", [], b"", 405, PRIVATE, b"Method Not Allowed"),
    ("DELETE", "/simple/", [], b"", 405, PRIVATE, b"Method Not Allowed"),
    ("PUT", "/legacy/", [], b"x" * 1000, 405, PRIVATE, b"Method Not Allowed"),
    ("POST", "/legacy/", [FORM], b"--x--\r\n", 401, PRIVATE, b"Invalid or non-existent authentication"),
    ("POST", "/legacy/", [FORM, ("Authorization", BAD_AUTH)], b"--x--\r\n", 403, PRIVATE, b""),
    ("POST", "/legacy/", [FORM, ("Authorization", AUTH)], b"--x--\r\n", 400, PRIVATE, b"Unknown action"),
    (
        "POST",
        "/legacy/",
        [("Content-Type", "text/plain"), ("Authorization", AUTH)],
        b"hi",
        400,
        PRIVATE,
        b"multipart",
    ),
    ("POST", "/legacy/", [FORM], b"x" * 60_000, 401, PRIVATE, b"Invalid or non-existent authentication"),
]


@pytest.mark.parametrize("method, path, headers, body, status, cache_control, text", POSTS)
def test_posts_and_refusals_are_framed_and_keep_the_connection(
    index, method, path, headers, body, status, cache_control, text
):
    wire = index.connect()
    try:
        answer = wire.ask(method, path, headers, body)
        after = wire.ask("GET", "/pypi/wired/json")  # a small refused body is drained: still in step
    finally:
        wire.close()
    assert (answer.status, answer.get("Cache-Control")) == (status, cache_control), answer
    assert text in (gzip.decompress(answer.body) if answer.get("Content-Encoding") == "gzip" else answer.body)
    assert answer.get("Connection") == "keep-alive"
    check_error(answer)
    assert after.status == 200


def test_pipelined_requests_are_answered_in_order(index):
    asked = [
        ("GET", "/simple/", ()),
        ("HEAD", "/simple/wired/", ()),
        ("GET", index.file_url, ()),
        ("GET", "/nowhere", ()),
        ("GET", "/simple/nope/", ()),
        ("GET", index.file_url, (("Range", "bytes=0-3"),)),
        ("HEAD", "/", ()),
        ("GET", "/simple/wired/", ((GZIP),)),
        ("GET", "/pypi/wired/json", ()),
    ]
    wire = index.connect()
    try:
        wire.sock.sendall(b"".join(Wire.request(m, p, h) for m, p, h in asked))
        answers = [wire.read(m) for m, _, _ in asked]
    finally:
        wire.close()
    assert [a.status for a in answers] == [200, 200, 200, 404, 404, 206, 200, 200, 200]
    assert answers[2].body == index.wheel and answers[5].body == index.wheel[:4]


def test_kept_alive_simple_pages_answered_by_the_event_loop_are_framed(index):
    """Requests that arrive one by one on a kept-alive connection, after the previous answer,
    are those the worker's event loop answers itself (pypi.server.inline_io)."""
    wire = index.connect()
    try:
        first = {h: wire.ask("GET", "/simple/wired/", h) for h in ((), (GZIP,))}
        for _ in range(3):
            for headers, full in first.items():
                time.sleep(0.1)  # past the thread's linger: the event loop reads the next request
                again = wire.ask("GET", "/simple/wired/", headers)
                assert again.fixed_headers() == full.fixed_headers() and again.body == full.body
                time.sleep(0.1)
                head = wire.ask("HEAD", "/simple/wired/", headers)
                assert head.fixed_headers() == full.fixed_headers() and head.body == b""
                time.sleep(0.1)
                same = wire.ask("GET", "/simple/wired/", [*headers, ("If-None-Match", full.get("ETag"))])
                assert same.status == 304 and same.body == b""
            time.sleep(0.1)
            missing = wire.ask("GET", "/simple/nope/")
            assert missing.status == 404 and missing.get("Cache-Control") == MISSING
            check_error(missing)
    finally:
        wire.close()


@pytest.mark.parametrize(
    "request_line, headers",
    [("HTTP/1.0", ()), ("HTTP/1.1", (("Connection", "close"),))],
)
@pytest.mark.parametrize("path", ["/simple/", "/pypi/wired/json", "/nowhere", FILE_URL])
def test_a_connection_the_client_ends_says_close_and_is_closed(index, request_line, headers, path):
    wire = index.connect()
    try:
        wire.sock.sendall(Wire.request("GET", _path(index, path), headers, version=request_line))
        answer = wire.read("GET")
        assert answer.get("Connection") == "close"
        assert wire.closed_by_server()
    finally:
        wire.close()


#: (headers, body sent, expected status): uploads refused before their body was read, with
#: more of it left than the server drains before reusing a connection (64 KiB), or a body
#: the client waits to be asked for (Expect: 100-continue) and never is.
UNREAD_BODIES = [
    pytest.param([FORM], b"x" * 300_000, 401, id="401-body-sent"),
    pytest.param([FORM, ("Authorization", BAD_AUTH)], b"x" * 3_000_000, 403, id="403-body-sent"),
    pytest.param(
        [FORM, ("Authorization", AUTH), ("Content-Length", "500000000")], b"x" * 1000, 413, id="413-declared"
    ),
    pytest.param([FORM, ("Content-Length", "9000"), ("Expect", "100-continue")], b"", 401, id="401-expect"),
    pytest.param([FORM, CHUNKED], chunked(b"x" * 5000), 401, id="401-chunked"),
    pytest.param(
        [("Content-Type", "text/xml"), ("Content-Length", "5000000")], b"<x>", 413, id="xmlrpc-413-declared"
    ),
]


@pytest.mark.parametrize("headers, body, status", UNREAD_BODIES)
def test_a_body_left_unread_ends_the_connection_and_the_answer_says_so(index, headers, body, status):
    """The server will not read megabytes to discard them: it closes the connection, and the
    answer's head must say ``Connection: close`` (a client that reuses a connection announced
    kept alive gets a reset instead of its next answer)."""
    path = "/RPC2" if ("Content-Type", "text/xml") in headers else "/legacy/"
    wire = index.connect()
    try:
        wire.send("POST", path, headers, body)
        answer = wire.read("POST")
        assert answer.status == status, answer
        assert answer.get("Cache-Control") == PRIVATE
        check_error(answer)
        assert answer.get("Connection") == "close", answer.headers
        assert wire.closed_by_server(wait=8)
    finally:
        wire.close()


@pytest.mark.parametrize("path", ["/pypi/bulky/json", "/pypi/bulky/1.0/json", "/project/bulky/"])
def test_large_pages_pipelined_to_a_slow_reader_are_whole(index, path):
    """Pages larger than response.py joins to the head and than the socket takes at once,
    asked twice in one write (identity, then gzip) by a client that reads slowly."""
    wire = index.connect()
    try:
        wire.sock.sendall(Wire.request("GET", path) + Wire.request("GET", path, [GZIP]))
        time.sleep(0.3)  # the server's writes fill the socket before the client reads
        plain, packed = wire.read("GET"), wire.read("GET")
        after = wire.ask("HEAD", path)
    finally:
        wire.close()
    assert plain.status == packed.status == 200 and len(plain.body) > 500_000
    if packed.get("Content-Encoding") == "gzip":
        assert gzip.decompress(packed.body) == plain.body
    else:
        assert packed.body == plain.body
    assert after.get("Content-Length") == str(len(plain.body))


@pytest.mark.parametrize("expect", [False, True], ids=["plain", "expect-100"])
def test_an_upload_and_its_refusal_keep_the_connection_in_step(index, tmp_path, expect):
    """An upload read whole (accepted, or refused after its body: the file exists) leaves the
    connection usable, with ``Expect: 100-continue`` too; the next read sees the upload."""
    version = "2.0" if expect else "3.0"
    bodies = []
    for extra in (0, 100):  # the second: another file under the same name, refused
        (tmp_path / str(extra)).mkdir()
        wheel = make_wheel(str(tmp_path / str(extra)), "wired", version, extra_bytes=extra)
        bodies.append(multipart_upload(wheel, "wired", version, boundary="wire"))
    wire = index.connect()
    try:
        answers = []
        for content_type, body in bodies:
            headers = [
                ("Content-Type", content_type),
                ("Authorization", AUTH),
                ("Content-Length", str(len(body))),
            ]
            if expect:
                headers.append(("Expect", "100-continue"))
            wire.send("POST", "/legacy/", headers)
            if expect:
                assert (
                    wire.file.readline() == b"HTTP/1.1 100 Continue\r\n" and wire.file.readline() == b"\r\n"
                )
            wire.sock.sendall(body)
            answers.append(wire.read("POST"))
        page = wire.ask("GET", "/simple/wired/")
    finally:
        wire.close()
    assert [a.status for a in answers] == [200, 400], answers
    for answer in answers:
        assert answer.get("Connection") == "keep-alive" and answer.get("Cache-Control") == PRIVATE
    check_error(answers[1])
    assert f"wired-{version}-py3-none-any.whl".encode() in page.body


@pytest.mark.parametrize("path", ["/simple/", "/pypi/wired/json"])
def test_expect_100_continue_without_a_body_keeps_the_connection(index, path):
    """A request with ``Expect: 100-continue`` and no body (nothing held back) is answered
    and its connection kept."""
    wire = index.connect()
    try:
        first = wire.ask("GET", path, [("Expect", "100-continue")])
        second = wire.ask("GET", path)
    finally:
        wire.close()
    assert first.status == second.status == 200
    assert first.get("Connection") == "keep-alive" and first.body == second.body
