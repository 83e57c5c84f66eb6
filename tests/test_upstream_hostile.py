"""Issue 10 against a hostile upstream on 127.0.0.1 (tests/services/hostile_upstream.py), on
SQLite and PostgreSQL: whatever upstream sends, the proxy answers a clear 4xx or a
502/503/504 within ``[upstream] timeout`` and stores nothing it cannot verify, and the mirror
fails cleanly; no answer is a 500, a hang or unbounded memory."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import webtest

from pypi.app import make_app
from pypi.index.db import Database
from pypi.upstream.sync import Mirror
from tests.conftest import make_config
from tests.dists import make_sdist
from tests.services.hostile_upstream import HostileUpstream

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
JSON = {"Accept": JSON_TYPE}
#: A stored object's path: content-addressed by a hex digest, then a plain file name.
CONTENT_PATH = re.compile(r"packages/[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{60}/[A-Za-z0-9_.+!-]+")


def json_page(name: str, files: list[dict]) -> tuple[int, dict[str, str], bytes]:
    body = {"meta": {"api-version": "1.0"}, "name": name, "files": files}
    return 200, {"Content-Type": JSON_TYPE}, json.dumps(body).encode()


def entry(filename: str, url: str, data: bytes | None = None, **extra) -> dict:
    sha = hashlib.sha256(data).hexdigest() if data is not None else "0" * 64
    return {"filename": filename, "url": url, "hashes": {"sha256": sha}, **extra}


@pytest.fixture
def up():
    server = HostileUpstream()
    yield server
    server.stop()


@pytest.fixture
def internal():
    """Another service on this host (another port): no upstream link may reach it."""
    server = HostileUpstream({"/secret": (200, {}, b"internal secret")})
    yield server
    server.stop()


class Proxy:
    """The application in proxy mode in front of ``up``, on one database."""

    def __init__(self, tmp_path, db_url, up: HostileUpstream, **settings: str) -> None:
        self.config = make_config(
            tmp_path, db_url, upstream={"url": up.simple, "mode": "proxy", "timeout": "3", **settings}
        )
        self.db = Database(self.config.database.url)
        self.app = webtest.TestApp(make_app(self.config, db=self.db))
        self.store_dir = tmp_path / "data" / "packages"

    def get(self, path: str, **kwargs):
        kwargs.setdefault("expect_errors", True)
        return self.app.get(path, **kwargs)

    def rows(self, sql: str, params=()) -> list:
        with self.db.transaction() as tx:
            return tx.all(sql, params)

    def stored(self) -> list[str]:
        root = self.store_dir
        if not root.exists():
            return []
        return sorted(
            str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.suffix != ".cloudpypi-meta"
        )

    def close(self) -> None:
        self.db.close()


@pytest.fixture
def proxy_for(tmp_path, db_url):
    made = []

    def make(up: HostileUpstream, **settings: str) -> Proxy:
        p = Proxy(tmp_path, db_url, up, **settings)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def mirror_run(tmp_path, db_url, up: HostileUpstream, **settings: str):
    from pypi.commands.common import open_storage

    config = make_config(
        tmp_path, db_url, upstream={"url": up.simple, "mode": "mirror", "timeout": "3", **settings}
    )
    db = Database(config.database.url)
    store = open_storage(config)
    try:
        report = Mirror(db, store, config.upstream, tmp_dir=str(tmp_path / "tmp"), jobs=1).run()
        with db.transaction() as tx:
            files = tx.all("SELECT filename, path FROM files")
        return report, files
    finally:
        store.close()
        db.close()


# -- 1. file names, hashes and links ------------------------------------------------------------
HOSTILE_NAMES = [
    "../../../../tmp/evil-1.0.tar.gz",
    "/etc/evil-1.0.tar.gz",
    "evil-1.0\\..\\..\\x.tar.gz",
    "..\\evil-1.0.tar.gz",
    "evil-1.0\x00.tar.gz",
    "%2e%2e/evil-1.0.tar.gz",
    "evil-1.0.tar.gz/../../other-1.0.tar.gz",
    "other-1.0.tar.gz",  # another project's file name
    "evil_not-1.0-py3-none-any.whl",
    ".evil-1.0.tar.gz",
]


def hostile_page(tmp_path, up: HostileUpstream, internal: HostileUpstream) -> tuple[str, bytes]:
    """/simple/evil/: one good sdist among hostile names, hashes and links."""
    d = tmp_path / "dists"
    d.mkdir(exist_ok=True)
    good = open(make_sdist(str(d), "evil", "1.0"), "rb").read()
    up.routes["/files/evil-1.0.tar.gz"] = (200, {}, good)
    files = [entry("evil-1.0.tar.gz", "/files/evil-1.0.tar.gz", good)]
    files += [entry(n, "/files/evil-1.0.tar.gz", good) for n in HOSTILE_NAMES]
    # A hash that is not a hex digest (it would become the storage path).
    files.append(
        {"filename": "evil-2.0.tar.gz", "url": "/files/x", "hashes": {"sha256": "../../../../etc/passwd"}}
    )
    files.append(
        {
            "filename": "evil-2.1.tar.gz",
            "url": "/files/x",
            "hashes": {"sha256": "a" * 64, "blake2b_256": "../" * 22},
        }
    )
    # Links elsewhere: another port on this host, file://, other schemes.
    files.append(entry("evil-3.0.tar.gz", internal.url + "/secret", b"internal secret"))
    files.append(entry("evil-3.1.tar.gz", "file:///etc/passwd", b""))
    files.append(entry("evil-3.2.tar.gz", "gopher://127.0.0.1:70/x", b""))
    files.append(entry("evil-3.3.tar.gz", f"//127.0.0.1:{internal.port}/secret", b"internal secret"))
    up.routes["/simple/evil/"] = json_page("evil", files)
    return "evil-1.0.tar.gz", good


def assert_only_good(rows, good_name: str) -> None:
    assert [r["filename"] for r in rows] == [good_name]
    for r in rows:
        assert CONTENT_PATH.fullmatch(r["path"]), r["path"]


def test_proxy_refuses_hostile_file_names_hashes_and_links(proxy_for, up, internal, tmp_path):
    good_name, good = hostile_page(tmp_path, up, internal)
    proxy = proxy_for(up)
    page = proxy.get("/simple/evil/", headers=JSON)
    assert page.status_int == 200, page.text
    assert [f["filename"] for f in page.json["files"]] == [good_name]
    rows = proxy.rows("SELECT filename, path FROM files")
    assert_only_good(rows, good_name)
    assert proxy.rows("SELECT filename FROM file_registry") == [{"filename": good_name}] or [
        r["filename"] for r in proxy.rows("SELECT filename FROM file_registry")
    ] == [good_name]
    got = proxy.get(page.json["files"][0]["url"])
    assert got.status_int == 200 and got.body == good
    assert proxy.stored() and all(CONTENT_PATH.fullmatch(p.removesuffix(".metadata")) for p in proxy.stored())
    assert internal.seen == []  # no request ever reached the other service


def test_mirror_refuses_hostile_file_names_hashes_and_links(up, internal, tmp_path, db_url):
    good_name, _good = hostile_page(tmp_path, up, internal)
    up.routes["/simple/"] = (200, {"Content-Type": "text/html"}, b'<a href="evil/">evil</a>')
    report, rows = mirror_run(tmp_path, db_url, up)
    assert_only_good(rows, good_name)
    assert not report.ok and "not taken" in report.summary(), report.summary()
    assert internal.seen == []
    for p in (tmp_path / "data").rglob("*"):
        assert str(p.resolve()).startswith(str((tmp_path / "data").resolve()))


def test_html_page_with_hostile_links(proxy_for, up, internal, tmp_path):
    d = tmp_path / "dists"
    d.mkdir()
    good = open(make_sdist(str(d), "evil", "1.0"), "rb").read()
    sha = hashlib.sha256(good).hexdigest()
    up.routes["/files/evil-1.0.tar.gz"] = (200, {}, good)
    links = [f'<a href="/files/evil-1.0.tar.gz#sha256={sha}">evil-1.0.tar.gz</a>']
    links += [
        f'<a href="/files/evil-1.0.tar.gz#sha256={sha}">{n}</a>' for n in HOSTILE_NAMES if "\x00" not in n
    ]
    links.append(f'<a href="{internal.url}/secret#sha256={sha}">evil-3.0.tar.gz</a>')
    links.append(f'<a href="file:///etc/passwd#sha256={sha}">evil-3.1.tar.gz</a>')
    links.append(f'<a href="../../%2e%2e/%2e%2e/secret#sha256={sha}"></a>')  # name from the URL: "secret"
    links.append('<a href="/files/evil-1.0.tar.gz#sha256=../../x">evil-4.0.tar.gz</a>')
    up.routes["/simple/evil/"] = (200, {"Content-Type": "text/html"}, "".join(links).encode())
    proxy = proxy_for(up)
    page = proxy.get("/simple/evil/", headers=JSON)
    assert page.status_int == 200
    assert [f["filename"] for f in page.json["files"]] == ["evil-1.0.tar.gz"]
    assert_only_good(proxy.rows("SELECT filename, path FROM files"), "evil-1.0.tar.gz")
    assert internal.seen == []


def test_a_redirect_to_another_host_is_not_followed(proxy_for, up, internal, tmp_path):
    """Upstream's own file URL redirecting to another service on this host: 502, no request there."""
    d = tmp_path / "dists"
    d.mkdir()
    good = open(make_sdist(str(d), "evil", "1.0"), "rb").read()
    up.routes["/files/evil-1.0.tar.gz"] = (302, {"Location": internal.url + "/secret"}, b"")
    up.routes["/simple/evil/"] = json_page("evil", [entry("evil-1.0.tar.gz", "/files/evil-1.0.tar.gz", good)])
    up.routes["/simple/moved/"] = (301, {"Location": internal.url + "/secret"}, b"")
    proxy = proxy_for(up)
    page = proxy.get("/simple/evil/", headers=JSON)
    got = proxy.get(page.json["files"][0]["url"])
    assert got.status_int == 502
    assert proxy.get("/simple/moved/", headers=JSON).status_int == 502
    assert internal.seen == [] and proxy.stored() == []


def test_file_hosts_allows_a_file_host_elsewhere(proxy_for, up, internal, tmp_path):
    """pypi.org's files are on another host: ``[upstream] file_hosts`` names the ones allowed."""
    d = tmp_path / "dists"
    d.mkdir()
    good = open(make_sdist(str(d), "evil", "1.0"), "rb").read()
    internal.routes["/files/evil-1.0.tar.gz"] = (200, {}, good)
    up.routes["/simple/evil/"] = json_page(
        "evil", [entry("evil-1.0.tar.gz", internal.url + "/files/evil-1.0.tar.gz", good)]
    )
    proxy = proxy_for(up, file_hosts=f"127.0.0.1:{internal.port}")
    page = proxy.get("/simple/evil/", headers=JSON)
    assert [f["filename"] for f in page.json["files"]] == ["evil-1.0.tar.gz"]
    assert proxy.get(page.json["files"][0]["url"]).body == good


# -- 2./3. huge, endless, slow and encoded answers ---------------------------------------------
def _zeros(total: int, block: int = 1 << 20):
    def parts():
        for _ in range(total // block):
            yield bytes(block)

    return parts


def gzip_bomb(size: int) -> bytes:
    """gzip of ``size`` zero bytes (about size/1000 bytes), built without holding ``size``."""
    import zlib

    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = []
    block = bytes(1 << 20)
    for _ in range(size >> 20):
        out.append(c.compress(block))
    out.append(c.flush())
    return b"".join(out)


def slow_routes(up: HostileUpstream) -> dict[str, str]:
    """name -> what its page does."""
    up.routes["/simple/trickle-body/"] = up.trickle(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100000\r\n\r\n<html>", every=0.2
    )
    up.routes["/simple/trickle-head/"] = up.trickle(b"HTTP/1.1 200 OK\r\nX-Slow: ", b"x", every=0.2)
    up.routes["/simple/trickle-chunks/"] = up.trickle(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"1\r\n \r\n",
        every=0.2,
    )
    up.routes["/simple/silent/"] = up.trickle(b"", b"", every=30)
    up.routes["/simple/endless/"] = up.endless({"Content-Type": "text/html"})
    up.routes["/simple/endless-json/"] = up.endless({"Content-Type": JSON_TYPE}, b'[{"a": "b"}, ' * 4096)
    up.routes["/simple/two-gb/"] = up.stream(
        200, {"Content-Type": "text/html", "Content-Length": str(2 << 30)}, _zeros(2 << 30)
    )
    bomb = gzip_bomb(1 << 30)
    up.routes["/simple/gzip-bomb/"] = (200, {"Content-Type": JSON_TYPE, "Content-Encoding": "gzip"}, bomb)
    up.routes["/simple/deflate-bomb/"] = (
        200,
        {"Content-Type": "text/html", "Content-Encoding": "deflate"},
        bomb,
    )
    return {
        "trickle-body": "504",
        "trickle-head": "504",
        "trickle-chunks": "504",
        "silent": "504",
        "endless": "502",
        "endless-json": "502",
        "two-gb": "502",
        "gzip-bomb": "502",
        "deflate-bomb": "502",
    }


def test_proxy_answers_within_the_timeout_with_bounded_memory(proxy_for, up):
    """Slow-loris (a byte every 0.2 s in the head, the body or the chunks), silence, endless
    or 2 GB bodies and gzip/deflate bombs: a 502 or 504 within about ``timeout`` seconds
    (total, not per read), without holding more than the page cap in memory, nothing stored."""
    import time
    import tracemalloc

    from pypi.upstream import client

    expected = slow_routes(up)
    proxy = proxy_for(up, timeout="2")
    for name, status in expected.items():
        tracemalloc.start()
        started = time.monotonic()
        got = proxy.get(f"/simple/{name}/", headers=JSON)
        took = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert str(got.status_int) == status, (name, got.status, got.text)
        assert took < 2 + 4, (name, took)  # the timeout, plus slack for a loaded machine
        assert peak < 3 * client.MAX_PAGE, (name, peak)
        # Every worker then answers at once for a while, without asking upstream again.
        asked = len(up.seen)
        again, took = time_get(proxy, f"/simple/{name}/")
        assert again.status_int in (502, 504) and took < 2 and len(up.seen) == asked
    assert proxy.rows("SELECT * FROM projects") == [] and proxy.stored() == []


def time_get(proxy: Proxy, path: str):
    import time

    started = time.monotonic()
    got = proxy.get(path, headers=JSON)
    return got, time.monotonic() - started


def test_mirror_fails_cleanly_on_endless_slow_and_encoded_pages(tmp_path, db_url, up):
    import time

    expected = slow_routes(up)
    links = "".join(f'<a href="{n}/">{n}</a>' for n in expected)
    up.routes["/simple/"] = (200, {"Content-Type": "text/html"}, links.encode())
    started = time.monotonic()
    report, files = mirror_run(tmp_path, db_url, up, timeout="2")
    took = time.monotonic() - started
    assert files == [] and not report.ok
    assert len(report.failures) == len(expected), report.summary()
    assert took < len(expected) * 2 + 10, took


@pytest.mark.parametrize(
    "listing",
    ["endless", "trickle", "gzip"],
)
def test_mirror_fails_cleanly_on_an_endless_slow_or_encoded_listing(tmp_path, db_url, up, listing):
    import time

    if listing == "endless":
        up.routes["/simple/"] = up.endless({"Content-Type": "text/html"}, b'<a href="x/">x</a>' * 4096)
        up.routes["/pypi"] = up.endless(
            {"Content-Type": "text/xml"}, b"<value><string>x</string></value>" * 2048
        )
    elif listing == "trickle":
        up.routes["/simple/"] = up.trickle(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100000\r\n\r\n", every=0.2
        )
    else:
        up.routes["/simple/"] = (
            200,
            {"Content-Type": "text/html", "Content-Encoding": "gzip"},
            gzip_bomb(1 << 30),
        )
    started = time.monotonic()
    report, files = mirror_run(tmp_path, db_url, up, timeout="2")
    assert time.monotonic() - started < 60
    assert not report.ok and files == []
    assert "upstream" in report.summary()
