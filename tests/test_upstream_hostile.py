"""Issue 10 against a hostile upstream on 127.0.0.1 (tests/services/hostile_upstream.py), on
SQLite and PostgreSQL: whatever upstream sends, the proxy answers a clear 4xx or a
502/503/504 within ``[upstream] timeout`` and stores nothing it cannot verify, and the mirror
fails cleanly; no answer is a 500, a hang or unbounded memory."""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time

import pytest
import webtest

from pypi.app import make_app
from pypi.config import ConfigError
from pypi.index.db import Database
from pypi.upstream.sync import Mirror
from tests.conftest import make_config
from tests.dists import make_sdist, make_wheel
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


# -- 4. files that are not what upstream said --------------------------------------------------
def test_proxy_never_serves_nor_stores_files_unlike_upstreams_word(proxy_for, up, tmp_path):
    """Bigger than declared, bytes not matching the sha256, no hash at all: a 502 (or not
    listed), nothing stored, the row still not pulled; then the right bytes are pulled."""
    d = tmp_path / "dists"
    d.mkdir()
    good = open(make_sdist(str(d), "liar", "1.0"), "rb").read()
    other = open(make_sdist(str(d), "liar", "2.0"), "rb").read()
    up.routes["/f/liar-1.0.tar.gz"] = (200, {}, good + b"x" * (1 << 20))  # bigger than declared
    up.routes["/f/liar-2.0.tar.gz"] = (200, {}, other[:-1] + b"!")  # not the bytes hashed
    up.routes["/f/liar-3.0.tar.gz"] = (200, {}, good)
    up.routes["/f/liar-4.0.tar.gz"] = up.endless({})  # endless: read only to its declared size
    files = [
        entry("liar-1.0.tar.gz", "/f/liar-1.0.tar.gz", good, size=len(good)),
        entry("liar-2.0.tar.gz", "/f/liar-2.0.tar.gz", other),
        {"filename": "liar-3.0.tar.gz", "url": "/f/liar-3.0.tar.gz", "hashes": {}},
        {"filename": "liar-3.1.tar.gz", "url": "/f/liar-3.0.tar.gz", "hashes": {"md5": "0" * 32}},
        entry("liar-4.0.tar.gz", "/f/liar-4.0.tar.gz", good, size=len(good)),
    ]
    up.routes["/simple/liar/"] = json_page("liar", files)
    proxy = proxy_for(up)
    page = proxy.get("/simple/liar/", headers=JSON).json
    links = {f["filename"]: f["url"] for f in page["files"]}
    assert sorted(links) == ["liar-1.0.tar.gz", "liar-2.0.tar.gz", "liar-4.0.tar.gz"]
    for name in links:
        got = proxy.get(links[name])
        assert got.status_int == 502, (name, got.status)
    assert proxy.stored() == []
    assert {r["stored"] for r in proxy.rows("SELECT stored FROM files")} == {0}
    assert not list((tmp_path / "data" / "tmp").glob("*")) if (tmp_path / "data" / "tmp").exists() else True
    # Upstream corrected: the right bytes are pulled and served.
    up.routes["/f/liar-1.0.tar.gz"] = (200, {}, good)
    assert proxy.get(links["liar-1.0.tar.gz"]).body == good


def test_mirror_never_stores_files_unlike_upstreams_word(up, tmp_path, db_url):
    d = tmp_path / "dists"
    d.mkdir()
    good = open(make_sdist(str(d), "liar", "1.0"), "rb").read()
    up.routes["/f/liar-1.0.tar.gz"] = (200, {}, good + b"x" * 1000)
    up.routes["/f/liar-2.0.tar.gz"] = (200, {}, good)
    files = [
        entry("liar-1.0.tar.gz", "/f/liar-1.0.tar.gz", good, size=len(good)),
        entry("liar-2.0.tar.gz", "/f/liar-2.0.tar.gz", b"other bytes"),
    ]
    up.routes["/simple/liar/"] = json_page("liar", files)
    up.routes["/simple/"] = (200, {"Content-Type": "text/html"}, b'<a href="liar/">liar</a>')
    report, rows = mirror_run(tmp_path, db_url, up)
    assert rows == [] and not report.ok and len(report.failures) == 2, report.summary()
    assert not list((tmp_path / "data" / "packages").rglob("*.tar.gz"))


# -- 5. XML-RPC ---------------------------------------------------------------------------------
LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lollollollollollollollollollol">'
    + "".join(f'<!ENTITY lol{i} "' + (f"&lol{i - 1};" if i else "&lol;") * 10 + '">' for i in range(10))
    + "]>"
)
XXE = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'


def _serve_fine(tmp_path, up) -> None:
    """Upstream lists one good project, ``fine``, with one sdist."""
    d = tmp_path / "dists"
    d.mkdir()
    good = open(make_sdist(str(d), "fine", "1.0"), "rb").read()
    up.routes["/f/fine-1.0.tar.gz"] = (200, {}, good)
    up.routes["/simple/fine/"] = json_page("fine", [entry("fine-1.0.tar.gz", "/f/fine-1.0.tar.gz", good)])
    up.routes["/simple/"] = (200, {"Content-Type": "text/html"}, b'<a href="fine/">fine</a>')


def rpc_answer(value: str, prolog: str = "") -> tuple[int, dict[str, str], bytes]:
    body = f"{prolog}<methodResponse><params><param><value>{value}</value></param></params></methodResponse>"
    return 200, {"Content-Type": "text/xml"}, body.encode()


@pytest.mark.parametrize(
    "answer",
    [
        rpc_answer("<string>&lol9;</string>", LAUGHS),
        rpc_answer("<struct><member><name>&xxe;</name><value><int>1</int></value></member></struct>", XXE),
        rpc_answer(
            "<struct><member><name>../../x</name><value><string>nan</string></value></member></struct>"
        ),
        rpc_answer(
            "<struct><member><name>//127.0.0.1:1/x</name><value><int>1</int></value></member></struct>"
        ),
        rpc_answer(
            "<array><data>"
            + "<value><array><data>" * 5000
            + "</data></array></value>" * 5000
            + "</data></array>"
        ),
        rpc_answer("<int>1</int>"),
        (200, {"Content-Type": "text/xml"}, b"<methodResponse><params><param><value><string>"),
    ],
    ids=["billion-laughs", "xxe", "bad-serial", "ssrf-name", "deep", "wrong-type", "truncated"],
)
def test_mirror_survives_hostile_xmlrpc_answers(tmp_path, db_url, up, internal, answer):
    """Whatever upstream's XML-RPC answers, the mirror ends (a clean failure, or a sync from
    the simple pages), follows no name to another host and never resolves an entity."""
    _serve_fine(tmp_path, up)
    up.routes["/pypi"] = answer
    report, rows = mirror_run(tmp_path, db_url, up)
    assert internal.seen == []
    assert all(CONTENT_PATH.fullmatch(r["path"]) for r in rows)
    assert report.ok or report.failures, report.summary()
    assert all(p.startswith(("/simple/", "/pypi", "/f/")) for p in up.paths())


def test_mirror_survives_a_hostile_changelog(tmp_path, db_url, up):
    """After a first sync, changelog_since_serial answers garbage: a clean failure or a full run."""
    _serve_fine(tmp_path, up)
    listing = "<struct><member><name>fine</name><value><int>7</int></value></member></struct>"

    def rpc(h):
        method = up.seen[-1][2].decode()
        if "list_packages_with_serial" in method:
            value = listing
        elif "changelog_last_serial" in method:
            value = "<int>9</int>"
        else:  # changelog_since_serial: entries of the wrong shape
            value = (
                "<array><data><value><array><data><value><int>1</int></value></data></array></value>"
                "<value><string>x</string></value></data></array>"
            )
        status, headers, body = rpc_answer(value)
        h.send_response(status)
        h.send_header("Content-Type", "text/xml")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    up.routes["/pypi"] = rpc
    report, rows = mirror_run(tmp_path, db_url, up)
    assert report.ok and len(rows) == 1, report.summary()
    report, rows = mirror_run(tmp_path, db_url, up)
    assert len(rows) == 1 and (report.ok or report.failures), report.summary()


@pytest.mark.parametrize(
    "body",
    [
        LAUGHS + "<methodCall><methodName>list_packages</methodName><params><param><value><string>&lol9;"
        "</string></value></param></params></methodCall>",
        XXE + "<methodCall><methodName>&xxe;</methodName></methodCall>",
        "<methodCall><methodName>changelog_since_serial</methodName><params><param><value>"
        + "<array><data><value>" * 20000
        + "</value></data></array>" * 20000
        + "</value></param></params></methodCall>",
        "<methodCall><methodName>release_urls</methodName><params>"
        + "<param><value><string>x</string></value></param>" * 20000
        + "</params></methodCall>",
    ],
    ids=["billion-laughs", "xxe", "deep", "many-params"],
)
def test_our_xmlrpc_endpoint_refuses_hostile_bodies(testapp, body):
    got = testapp.post("/pypi", body.encode(), headers={"Content-Type": "text/xml"}, expect_errors=True)
    assert got.status_int in (200, 400, 413), got.status
    if got.status_int == 200:
        assert b"<fault>" in got.body


def test_our_xmlrpc_endpoint_refuses_a_huge_body(testapp):
    body = b"<methodCall><methodName>" + b"x" * (2 << 20) + b"</methodName></methodCall>"
    got = testapp.post("/pypi", body, headers={"Content-Type": "text/xml"}, expect_errors=True)
    assert got.status_int == 413


# -- 8. pages that are not pages -----------------------------------------------------------------
NOT_PAGES = {
    "bad-json": (200, {"Content-Type": JSON_TYPE}, b'{"files": [{"filename": '),
    "deep-json": (200, {"Content-Type": JSON_TYPE}, b"[" * 200000 + b"]" * 200000),
    "json-list": (200, {"Content-Type": JSON_TYPE}, b"[1, 2]"),
    "json-types": (
        200,
        {"Content-Type": JSON_TYPE},
        json.dumps(
            {
                "files": [
                    1,
                    "x",
                    None,
                    {"filename": 5, "url": "/x", "hashes": {"sha256": "0" * 64}},
                    {"filename": "json-types-1.0.tar.gz", "url": 7, "hashes": {"sha256": "0" * 64}},
                    {"filename": "json-types-1.0.tar.gz", "url": "/x", "hashes": {"sha256": 5}},
                    {"filename": "json-types-1.0.tar.gz", "url": "/x", "hashes": ["sha256"]},
                    {
                        "filename": "json-types-1.1.tar.gz",
                        "url": "/x",
                        "hashes": {"sha256": "0" * 64},
                        "size": "big",
                        "yanked": [1],
                        "requires-python": 3,
                        "upload-time": {},
                        "core-metadata": {"sha256": 5},
                    },
                ]
            }
        ).encode(),
    ),
    "bad-serial": (200, {"Content-Type": "text/html", "X-PyPI-Last-Serial": "lots"}, b"<html></html>"),
    "huge-serial": (200, {"Content-Type": "text/html", "X-PyPI-Last-Serial": "9" * 5000}, b"<html></html>"),
    "binary": (200, {"Content-Type": "application/octet-stream"}, bytes(range(256)) * 100),
    "image": (200, {"Content-Type": "image/png"}, b"\x89PNG\r\n\x1a\n" + bytes(1000)),
    "loop": (302, {"Location": "./"}, b""),  # to itself, for ever
    "to-file": (302, {"Location": "file:///etc/passwd"}, b""),
    "to-gopher": (301, {"Location": "gopher://127.0.0.1/"}, b""),
    "no-location": (302, {}, b""),
    "teapot": (418, {}, b"I'm a teapot"),
    "server-error": (500, {}, b"boom"),
    "bad-status": lambda h: h.wfile.write(b"HTTP/1.1 abc OK\r\n\r\n"),
    "not-http": lambda h: h.wfile.write(b"SSH-2.0-OpenSSH_9.0\r\n"),
    "bad-length": lambda h: h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nxx"),
    "short-body": lambda h: h.wfile.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 500\r\n\r\n<a>"
    ),
    "many-headers": lambda h: h.wfile.write(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 500 + b"\r\n"),
    "long-header": lambda h: h.wfile.write(b"HTTP/1.1 200 OK\r\nX: " + b"y" * 100000 + b"\r\n\r\n"),
}


def test_proxy_answers_pages_that_are_not_pages_with_a_gateway_error(proxy_for, up):
    for name, route in NOT_PAGES.items():
        up.routes[f"/simple/{name}/"] = route
    proxy = proxy_for(up)
    for name in NOT_PAGES:
        for accept in (JSON, {"Accept": "text/html"}):
            got = proxy.get(f"/simple/{name}/", headers=accept)
            if name == "json-types":  # the one file with a name, a URL and a sha256 is taken
                assert got.status_int == 200, got.status
                continue
            assert got.status_int in (404, 502, 504), (name, got.status)
            got = proxy.get(f"/pypi/{name}/json")
            assert got.status_int in (200, 404, 502, 504) if name == "json-types" else (404, 502, 504), (
                name,
                got.status,
            )
    assert proxy.stored() == []


def test_a_bad_page_for_a_proxied_project_keeps_its_last_good_page(proxy_for, up, tmp_path):
    """A garbage answer (wrong content type, encoded, broken JSON) for a project already
    proxied: the last good page is served with a stale warning, its files are kept."""
    d = tmp_path / "dists"
    d.mkdir()
    good = open(make_sdist(str(d), "kept", "1.0"), "rb").read()
    up.routes["/f/kept-1.0.tar.gz"] = (200, {}, good)
    up.routes["/simple/kept/"] = json_page("kept", [entry("kept-1.0.tar.gz", "/f/kept-1.0.tar.gz", good)])
    proxy = proxy_for(up, page_ttl="0")
    first = proxy.get("/simple/kept/", headers=JSON).json
    for route in ("binary", "image", "bad-json", "deep-json", "json-list", "short-body", "loop", "to-file"):
        up.routes["/simple/kept/"] = NOT_PAGES[route]
        with proxy.db.transaction(write=True) as tx:  # asked again at once
            tx.execute("UPDATE upstream_pages SET fetched = 0")
        got = proxy.get("/simple/kept/", headers=JSON)
        assert got.status_int == 200 and "Warning" in got.headers, (route, got.status)
        assert got.json["files"] == first["files"], route


# -- 7. dependency confusion --------------------------------------------------------------------
def _alice(db) -> None:
    from pypi.index import auth
    from tests.conftest import PASSWORD

    with db.transaction(write=True) as tx:
        auth.create_user(tx, "alice", PASSWORD)


def test_a_local_name_never_shows_upstream_files_under_any_spelling(proxy_for, up, tmp_path):
    from tests.uploading import upload_wheel

    d = tmp_path / "dists"
    d.mkdir()
    evil = open(make_wheel(str(d), "acme-utils", "99.0"), "rb").read()
    proxy = proxy_for(up)
    _alice(proxy.db)
    upload_wheel(proxy.app, tmp_path, "Acme_Utils", "1.2")  # before upstream had the name
    up.seen.clear()
    up.routes["/f/acme_utils-99.0-py3-none-any.whl"] = (200, {}, evil)
    up.routes["/simple/acme-utils/"] = json_page(
        "acme-utils", [entry("acme_utils-99.0-py3-none-any.whl", "/f/acme_utils-99.0-py3-none-any.whl", evil)]
    )
    for spelling in ("acme-utils", "Acme_Utils", "acme.utils", "ACME-utils", "acme__utils", "Acme-.Utils"):
        got = proxy.get(f"/simple/{spelling}/", headers=JSON)
        if got.status_int == 301:
            got = proxy.get(got.headers["Location"], headers=JSON)
        assert [f["filename"] for f in got.json["files"]] == ["acme_utils-1.2-py3-none-any.whl"], spelling
        got = proxy.get(f"/pypi/{spelling}/json")
        if got.status_int == 301:
            got = proxy.get(got.headers["Location"])
        assert got.json["info"]["version"] == "1.2", spelling
    assert not any("acme" in p for p in up.paths())  # upstream never asked


def test_an_upload_to_a_proxied_name_is_refused_under_any_spelling(proxy_for, up, tmp_path):
    from tests.uploading import upload_wheel

    d = tmp_path / "dists"
    d.mkdir()
    data = open(make_sdist(str(d), "public-pkg", "1.0"), "rb").read()
    up.routes["/simple/public-pkg/"] = json_page("public-pkg", [entry("public_pkg-1.0.tar.gz", "/f/x", data)])
    up.routes["/simple/slow-name/"] = up.trickle(
        b"HTTP/1.1 200 OK\r\nContent-Length: 9999\r\n\r\n", every=0.2
    )
    proxy = proxy_for(up, timeout="2")
    _alice(proxy.db)
    for spelling in ("public-pkg", "Public_Pkg", "public.pkg"):  # not asked for before: looked up first
        got = upload_wheel(proxy.app, tmp_path, spelling, "2.0", status="*")
        assert got.status_int == 403 and "dependency confusion" in got.text, (spelling, got.status)
    # Upstream cannot say (a trickle): refused with 503 within the timeout (fail closed).
    got = upload_wheel(proxy.app, tmp_path, "slow_name", "1.0", status="*")
    assert got.status_int == 503
    assert proxy.rows("SELECT filename FROM files WHERE upstream_url IS NULL") == []


# -- 6. nonexistent names ------------------------------------------------------------------------
def test_a_flood_of_nonexistent_names_keeps_the_negative_cache_bounded(proxy_for, up, monkeypatch):
    """Random names upstream does not have: each asked once per TTL, and the rows remembering
    them stay bounded (the oldest go), whatever the number of names."""
    from pypi.upstream import proxy as proxy_module

    monkeypatch.setattr(proxy_module, "MAX_NEGATIVE", 50)
    proxy = proxy_for(up)
    for i in range(400):
        assert proxy.get(f"/simple/nope-{i}/", headers=JSON).status_int == 404
    asked = len(up.seen)
    assert asked == 400
    remembered = proxy.rows("SELECT COUNT(*) AS n FROM upstream_pages")[0]["n"]
    assert remembered <= 2 * 50, remembered
    # The newest are remembered: asked again, they do not reach upstream.
    assert proxy.get("/simple/nope-399/", headers=JSON).status_int == 404
    assert len(up.seen) == asked


def test_names_that_cannot_exist_never_reach_upstream(proxy_for, up):
    proxy = proxy_for(up)
    for name in (
        "@evil.example",
        "a:b",
        "x" * 500,
        "-leading",
        "trailing-",
        "..",
        "a b",
        "%C3%A9",
        "a%00b",
    ):
        got = proxy.get(f"/simple/{name}/", headers=JSON)
        assert got.status_int in (301, 400, 404), (name, got.status)
        got = proxy.get(f"/pypi/{name}/json")
        assert got.status_int in (301, 400, 404), (name, got.status)
    assert up.seen == []


def test_concurrent_requests_for_one_name_ask_upstream_once(proxy_for, up):
    import threading

    up.routes["/simple/slowish/"] = up.stream(
        200, {"Content-Type": "text/html"}, lambda: (__import__("time").sleep(1), [b"<html></html>"])[1]
    )
    proxy = proxy_for(up)
    answers = []

    def ask():
        answers.append(proxy.get("/simple/slowish/", headers=JSON).status_int)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert answers == [404] * 8
    assert up.paths().count("/simple/slowish/") == 1


def test_odd_fields_of_a_taken_file_render_everywhere(proxy_for, up, tmp_path):
    """A file taken with odd but well-typed fields (an upload time that is no time, a huge
    size, a requires-python that is no specifier, a long yank reason): every view answers."""
    import xmlrpc.client

    odd = {
        "upload-time": "yesterday, <b>noon</b>",
        "size": 2**62,
        "requires-python": ">=3; rm -rf / <script>",
        "yanked": "x" * 5000,
    }
    up.routes["/simple/odd/"] = json_page("odd", [entry("odd-1.0.tar.gz", "/f/odd", b"odd", **odd)])
    proxy = proxy_for(up)
    assert proxy.get("/simple/odd/", headers=JSON).status_int == 200
    assert proxy.get("/simple/odd/", headers={"Accept": "text/html"}).status_int == 200
    assert proxy.get("/pypi/odd/json").status_int == 200
    assert proxy.get("/pypi/odd/1.0/json").status_int == 200
    assert proxy.get("/project/odd/").status_int == 200
    for method, params in (("release_urls", ("odd", "1.0")), ("release_data", ("odd", "1.0"))):
        body = xmlrpc.client.dumps(params, method).encode()
        got = proxy.app.post("/pypi", body, headers={"Content-Type": "text/xml"}, expect_errors=True)
        assert got.status_int == 200, (method, got.status)
    got = proxy.get("/packages/" + proxy.rows("SELECT path FROM files")[0]["path"].removeprefix("packages/"))
    assert got.status_int == 502  # its bytes are not upstream's word


def test_a_trickling_file_is_given_up_on_in_time(proxy_for, up):
    """A file sent a byte at a time (below 32 KiB/s after the timeout): 504 in about the
    timeout, nothing stored; so is one whose head never ends."""
    import time

    up.routes["/f/slow-1.0.tar.gz"] = up.trickle(
        b"HTTP/1.1 200 OK\r\nContent-Length: 900000\r\n\r\n", every=0.1
    )
    up.routes["/f/slow-2.0.tar.gz"] = up.trickle(b"HTTP/1.1 200 OK\r\nX: ", b"y", every=0.1)
    up.routes["/simple/slow/"] = json_page(
        "slow",
        [
            entry("slow-1.0.tar.gz", "/f/slow-1.0.tar.gz", b"x", size=900000),
            entry("slow-2.0.tar.gz", "/f/slow-2.0.tar.gz", b"x"),
        ],
    )
    proxy = proxy_for(up, timeout="2")
    for f in proxy.get("/simple/slow/", headers=JSON).json["files"]:
        started = time.monotonic()
        got = proxy.get(f["url"])
        assert got.status_int == 504, (f["filename"], got.status)
        assert time.monotonic() - started < 2 + 4
    assert proxy.stored() == []


def upstream_settings(tmp_path, **ups: str):
    """The [upstream] settings that config.ini's section ``ups`` gives."""
    from pypi.config import build

    return build({"upstream": ups}, base_dir=str(tmp_path)).upstream


def test_file_hosts_setting_is_checked(tmp_path):
    cfg = functools.partial(upstream_settings, tmp_path)
    assert cfg().file_hosts == ("files.pythonhosted.org",)
    assert cfg(file_hosts="a.example b.example:8443").file_hosts == ("a.example", "b.example:8443")
    assert cfg(file_hosts="").file_hosts == ()
    for bad in ("a.example/path", "a.example:port", "u:p@a.example", "a.example?x"):
        with pytest.raises(ConfigError, match=r"\[upstream\] file_hosts"):
            cfg(file_hosts=bad)


def test_a_file_of_undeclared_size_is_read_only_to_max_undeclared_size(proxy_for, up, tmp_path, caplog):
    """An HTML (PEP 503) upstream declares no sizes: an endless file is refused once it passes
    ``[upstream] max_undeclared_size`` (502, nothing stored, no spool left), not streamed to disk
    until the deadline; a file under the limit is pulled and served."""
    d = tmp_path / "dists"
    d.mkdir()
    good = open(make_sdist(str(d), "nosize", "1.0"), "rb").read()
    up.routes["/f/nosize-1.0.tar.gz"] = (200, {}, good)
    up.routes["/f/nosize-2.0.tar.gz"] = up.endless({})
    sha = hashlib.sha256(good).hexdigest()
    up.routes["/simple/nosize/"] = (
        200,
        {"Content-Type": "text/html"},
        (
            f'<a href="/f/nosize-1.0.tar.gz#sha256={sha}">nosize-1.0.tar.gz</a>'
            f'<a href="/f/nosize-2.0.tar.gz#sha256={sha}">nosize-2.0.tar.gz</a>'
        ).encode(),
    )
    proxy = proxy_for(up, max_undeclared_size="256K", timeout="30")
    links = {f["filename"]: f["url"] for f in proxy.get("/simple/nosize/", headers=JSON).json["files"]}
    started = time.monotonic()
    refused = proxy.get(links["nosize-2.0.tar.gz"])
    assert refused.status_int == 502, refused.status
    assert "larger than 262144 bytes" in caplog.text  # the operator's log says why
    assert time.monotonic() - started < 10  # refused at the limit, not at the 30 s deadline
    assert proxy.stored() == []
    spool = tmp_path / "data" / "tmp"
    assert not spool.exists() or not [p for p in spool.iterdir() if p.name.startswith("upstream-")]
    assert proxy.get(links["nosize-1.0.tar.gz"]).body == good


def test_max_undeclared_size_setting(tmp_path):
    cfg = functools.partial(upstream_settings, tmp_path)
    assert cfg().max_undeclared_size == 4 * 1024**3
    assert cfg(max_undeclared_size="0").max_undeclared_size == 0
    assert cfg(max_undeclared_size="10M").max_undeclared_size == 10 * 1024**2
    with pytest.raises(ConfigError, match=r"\[upstream\] max_undeclared_size"):
        cfg(max_undeclared_size="lots")


def test_the_names_described_from_upstream_are_bounded():
    """The proxy's memory of names it asked upstream's JSON API for: asked again only after the
    TTL, at most ``cap`` names kept, the expired forgotten first."""
    from pypi.upstream.proxy import note_asked

    asked: dict[str, float] = {}
    assert note_asked(asked, "a", 0.0, 10, cap=3)
    assert not note_asked(asked, "a", 5.0, 10, cap=3)  # within the TTL
    for i, name in enumerate("bcdefg"):
        assert note_asked(asked, name, 6.0 + i, 10, cap=3)
    assert list(asked) == ["e", "f", "g"]  # a flood keeps the newest three
    assert note_asked(asked, "h", 25.0, 10, cap=3)
    assert asked == {"h": 25.0}  # the expired are forgotten
    assert note_asked(asked, "h", 35.0, 10, cap=3)
