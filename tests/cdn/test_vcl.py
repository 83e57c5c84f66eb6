"""The shipped VCL on a real Varnish, in front of a stub backend that answers with the
caching headers each test asks for (``/<case>`` picks them)."""

from __future__ import annotations

import http.client
import http.server
import threading
import time

import pytest

from tests.services.varnish import VCL, VarnishError, check_source, vcl_with_backend

pytestmark = pytest.mark.e2e

CASES: dict[str, dict[str, str]] = {
    "surrogate": {
        "Cache-Control": "max-age=600, public",
        "Surrogate-Control": "max-age=1",
        "Surrogate-Key": "project/stub index",
    },
    "surrogate-swr": {
        "Cache-Control": "max-age=600, public",
        "Surrogate-Control": "max-age=1, stale-while-revalidate=30, stale-if-error=60",
        "Surrogate-Key": "project/swr",
    },
    "cache-control": {"Cache-Control": "max-age=1, public"},
    "immutable": {"Cache-Control": "max-age=365000000, immutable, public"},
    "nothing": {},
    "private": {"Cache-Control": "private, no-store", "Surrogate-Control": "max-age=600"},
    "no-store": {"Cache-Control": "no-store"},
    "cookie": {"Cache-Control": "max-age=600, public", "Set-Cookie": "session=1"},
}


@pytest.fixture(scope="module")
def cdn(varnish_factory):
    hits = {"count": 0}

    class Stub(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits["count"] += 1
            body = f"{self.path} #{hits['count']}".encode()
            self.send_response(200)
            for name, value in CASES[self.path.strip("/").split("?")[0]].items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield varnish_factory("127.0.0.1", server.server_address[1])
    server.shutdown()
    server.server_close()


def get(varnish, path, headers=None, method="GET"):
    conn = http.client.HTTPConnection("127.0.0.1", varnish.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.headers, r.read().decode()
    finally:
        conn.close()


def caches(varnish, path, n=3, headers=None):
    return [get(varnish, path, headers)[1]["X-Cache"] for _ in range(n)]


def test_ttl_comes_from_surrogate_control_and_grace_is_zero_without_swr(cdn):
    assert caches(cdn, "/surrogate") == ["MISS", "HIT", "HIT"]
    time.sleep(1.2)
    # Expired (Cache-Control's 600 s is the browser's): fetched anew, not served stale.
    assert caches(cdn, "/surrogate", 2) == ["MISS", "HIT"]


def test_stale_while_revalidate_becomes_grace(cdn):
    _, _, first = get(cdn, "/surrogate-swr")
    time.sleep(1.2)
    status, headers, stale = get(cdn, "/surrogate-swr")
    assert (headers["X-Cache"], stale) == ("HIT", first)  # stale, refreshed in the background
    deadline = time.monotonic() + 5
    while get(cdn, "/surrogate-swr")[2] == first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert get(cdn, "/surrogate-swr")[2] != first


def test_cache_control_alone_is_honoured(cdn):
    assert caches(cdn, "/immutable") == ["MISS", "HIT", "HIT"]
    assert get(cdn, "/immutable")[1]["Cache-Control"] == "max-age=365000000, immutable, public"
    assert caches(cdn, "/cache-control", 2) == ["MISS", "HIT"]
    time.sleep(1.2)
    assert caches(cdn, "/cache-control", 1) == ["MISS"]  # no grace without stale-while-revalidate


@pytest.mark.parametrize("case", ["nothing", "private", "no-store", "cookie"])
def test_never_cached(cdn, case):
    assert caches(cdn, f"/{case}") == ["PASS", "PASS", "PASS"]


def test_requests_with_credentials_or_cookies_pass(cdn):
    get(cdn, "/immutable")
    assert caches(cdn, "/immutable", 1, {"Authorization": "Basic eDp5"}) == ["PASS"]
    assert caches(cdn, "/immutable", 1, {"Cookie": "a=b"}) == ["PASS"]


def test_surrogate_headers_never_reach_the_client(cdn):
    for _ in range(2):
        _, headers, _ = get(cdn, "/surrogate")
        assert not [h for h in headers if h.lower().startswith(("surrogate", "xkey"))]


def test_purge_by_key_and_by_url(cdn):
    get(cdn, "/immutable")
    caches(cdn, "/surrogate", 1)
    assert caches(cdn, "/surrogate", 1) == ["HIT"]
    status, _, body = get(cdn, "/", {"xkey": "project/other project/stub"}, method="PURGE")
    assert status == 200 and "Purged 1" in body
    assert caches(cdn, "/surrogate", 2) == ["MISS", "HIT"]
    assert caches(cdn, "/immutable", 1) == ["HIT"]
    assert get(cdn, "/immutable", method="PURGE")[0] == 200
    assert caches(cdn, "/immutable", 1) == ["MISS"]
    assert get(cdn, "/", {"xkey": "  "}, method="BAN")[0] == 400


def test_the_shipped_vcl_compiles_and_a_broken_one_is_reported_plainly():
    with open(VCL, encoding="utf-8") as f:
        source = vcl_with_backend(f.read(), "127.0.0.1", 1)
    check_source(source)
    broken = source.replace("sub vcl_recv {", "sub vcl_recv {\n    set req.nonsense = 1;", 1)
    with pytest.raises(VarnishError, match=r"(?s)does not compile.*Symbol not found: 'req\.nonsense'"):
        check_source(broken)
