"""Hostile requests: every one gets a 4xx with a clear message (or an XML-RPC Fault), never a 500,
through WebTest and against a live ``cloudpypi serve``; an unexpected error is a plain private 500."""

from __future__ import annotations

import http.client
import logging
import urllib.parse

import pytest

from pypi.views import web
from tests.services.live_server import start_server, write_config


def _xml(body: str) -> tuple[str, str, dict, bytes]:
    return ("POST", "/RPC2", {"Content-Type": "text/xml"}, body.encode())


def _call(method: str, *params: str) -> str:
    values = "".join(f"<param><value>{p}</value></param>" for p in params)
    return (
        f"<?xml version='1.0'?><methodCall><methodName>{method}</methodName>"
        f"<params>{values}</params></methodCall>"
    )


#: (method, raw path, headers, body) -> (status, text that must be in the answer)
HOSTILE: list[tuple[tuple[str, str, dict, bytes], int, str]] = [
    (("GET", "/simple/%ff/", {}, b""), 400, "not valid UTF-8"),
    (("GET", "/packages/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd", {}, b""), 400, "not valid UTF-8"),
    (("GET", "/pypi/%ff%fe/json", {}, b""), 400, "not valid UTF-8"),
    (("GET", "/simple/foo%0d%0aSet-Cookie:%20x=1/", {}, b""), 400, "control characters"),
    (("GET", "/project/Foo%0aBar/", {}, b""), 400, "control characters"),
    (("GET", "/simple/a%00b/", {}, b""), 400, "control characters"),
    (
        ("GET", "/simple/%C5%9Eirket/", {}, b""),
        404,
        "no project named",
    ),  # would redirect to a non-Latin-1 Location
    (("GET", "/pypi/%E2%98%83/json", {}, b""), 404, "no project named"),
    (("GET", "/project/demo/1.0%E2%98%83/", {}, b""), 404, "no such release"),
    (("GET", "/?q=%ff", {}, b""), 400, "query string is not valid UTF-8"),
    (("GET", "/simple/?format=%ff", {}, b""), 400, "query string is not valid UTF-8"),
    (("GET", "/?q=a%0d%0ab", {}, b""), 400, "control characters in the query string"),
    (
        _xml(_call("changelog_since_serial", "<int>99999999999999999999999</int>")),
        200,
        "does not fit in 64 bits",
    ),
    (_xml(_call("changelog_since_serial", "<i8>-9223372036854775809</i8>")), 200, "does not fit in 64 bits"),
    (_xml(_call("changelog_since_serial", "<string>abc</string>")), 200, "serial must be an integer"),
    (_xml(_call("release_urls", "<array><data/></array>", "<string>1</string>")), 200, "must be a string"),
    (_xml(_call("package_releases")), 200, "invalid method parameters"),
    (_xml("<methodCall><methodName>list_packages</methodName><params>"), 200, "parse error"),
    (
        _xml(
            "<?xml version='1.0'?><methodResponse><fault><value><struct></struct></value></fault>"
            "</methodResponse>"
        ),
        200,
        "parse error",
    ),
    (
        _xml("<methodResponse><params><param><value><int>1</int></value></param></params></methodResponse>"),
        200,
        "no methodName",
    ),
    (_xml(_call("list_packages", "<dateTime.iso8601>not a date</dateTime.iso8601>")), 200, "faultCode"),
    (_xml(_call("list_packages", "<base64>!!!</base64>")), 200, "faultCode"),
    (_xml(_call("list_packages", "<bogus>1</bogus>")), 200, "parse error"),
    (("POST", "/RPC2", {"Content-Type": "text/xml"}, b"<a>" + b"x" * (2 << 20) + b"</a>"), 413, "limited to"),
]
IDS = [f"{m} {p[:50]} {b[:60]!r}" for (m, p, _h, b), _s, _t in HOSTILE]


@pytest.mark.parametrize("request_, status, text", HOSTILE, ids=IDS)
def test_hostile_request_webtest(testapp, request_, status, text):
    method, raw_path, headers, body = request_
    path, _, query = raw_path.partition("?")
    environ = {
        "REQUEST_METHOD": method,
        # WSGI's PATH_INFO is the percent-decoded bytes as Latin-1.
        "PATH_INFO": urllib.parse.unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query,
    }
    r = _wsgi(testapp.app, environ, headers, body)
    got_status, got_headers, got_body = r
    assert got_status < 500
    assert got_status == status, (got_status, got_body[:300])
    assert text in got_body
    if got_status >= 400:
        assert got_headers["Cache-Control"] == "private, no-store"


def _wsgi(app, environ: dict, headers: dict, body: bytes) -> tuple[int, dict, str]:
    """Call the application with a raw environ (WebTest would re-encode the path)."""
    import io

    env = {
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "HTTP_HOST": "localhost",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
        "SCRIPT_NAME": "",
        **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items() if k != "Content-Type"},
        **environ,
    }
    if "Content-Type" in headers:
        env["CONTENT_TYPE"] = headers["Content-Type"]
    seen: dict = {}

    def start_response(status, headerlist, exc_info=None):
        seen["status"] = int(status.split()[0])
        seen["headers"] = dict(headerlist)

    out = b"".join(app(env, start_response))
    return seen["status"], seen["headers"], out.decode("utf-8", "replace")


def test_unexpected_error_is_a_plain_private_500(testapp, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("secret-token-1234 leaked in a traceback")

    monkeypatch.setattr(web.packages, "index_counts", broken)
    with caplog.at_level(logging.ERROR, logger="cloudpypi"):
        r = testapp.get("/", status=500)
    assert r.text == "Internal Server Error\n"
    assert r.status == "500 Internal Server Error"
    assert r.headers["Cache-Control"] == "private, no-store"
    assert "Surrogate-Key" not in r.headers
    assert "secret-token" not in r.text and "Traceback" not in r.text
    assert "secret-token-1234" in caplog.text  # logged for the operator


def test_simple_without_slash_redirects(testapp):
    r = testapp.get("/simple", status=301)
    assert r.location == "http://127.0.0.1:8080/simple/"
    assert r.headers["Cache-Control"] == "max-age=600, public"
    assert r.headers["Surrogate-Key"] == "index"
    r = testapp.get("/simple?format=application/vnd.pypi.simple.v1%2Bjson", status=301)
    assert r.location == "http://127.0.0.1:8080/simple/?format=application/vnd.pypi.simple.v1%2Bjson"
    assert r.follow().json["meta"]["api-version"]


# -- against a live server -------------------------------------------------------


@pytest.fixture(scope="module")
def live_index(tmp_path_factory):
    folder = tmp_path_factory.mktemp("guard-live")
    config = write_config(
        str(folder / "config.ini"),
        {
            "server": {"data_dir": str(folder / "data")},
            "database": {"url": f"sqlite:///{folder}/index.sqlite3"},
        },
    )
    server = start_server(config)
    yield server
    server.stop()


def test_hostile_requests_live(live_index):
    host, port = urllib.parse.urlsplit(live_index.url).netloc.split(":")
    failures = []
    for (method, raw_path, headers, body), status, text in HOSTILE:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            conn.request(method, raw_path, body=body or None, headers=headers)
            response = conn.getresponse()
            answer = response.read().decode("utf-8", "replace")
        finally:
            conn.close()
        if response.status != status or text not in answer:
            failures.append((method, raw_path[:60], response.status, answer[:200]))
    assert not failures, failures
    assert "Traceback" not in live_index.log()
