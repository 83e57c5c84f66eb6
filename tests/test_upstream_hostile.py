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
