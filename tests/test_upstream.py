"""Issue 10 in-process, on SQLite and PostgreSQL: the [upstream] settings, the proxy's
rendering (CDN links, the shared TTL), the mirror engine's serial bookkeeping.
The upstream is a real static PEP 503 tree served by ``python -m http.server``."""

from __future__ import annotations

import hashlib
import os

import pytest
import webtest

from pypi.app import make_app
from pypi.config import ConfigError, build
from pypi.index.db import Database
from pypi.upstream.filters import Filters
from pypi.upstream.sync import Mirror
from tests.conftest import make_config
from tests.dists import make_sdist, make_wheel
from tests.services.static_index import StaticServer, write_static_tree

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


@pytest.fixture
def tree(tmp_path):
    d = tmp_path / "dists"
    d.mkdir()
    wheel = make_wheel(str(d), "tree-one", "1.0")
    sdist = make_sdist(str(d), "tree-one", "1.0")
    files = [(os.path.basename(p), open(p, "rb").read(), {}) for p in (wheel, sdist)]
    write_static_tree(tmp_path / "tree", {"tree-one": files})
    server = StaticServer(tmp_path / "tree").start()
    yield server
    server.stop()


def test_upstream_settings_are_checked(tmp_path):
    def cfg(**ups):
        return build({"upstream": ups}, base_dir=str(tmp_path)).upstream

    assert cfg().mode == "off"
    with pytest.raises(ConfigError, match=r"\[upstream\] mode"):
        cfg(mode="cache")
    with pytest.raises(ConfigError, match=r"\[upstream\] url: required"):
        cfg(mode="mirror")
    with pytest.raises(ConfigError, match=r"\[upstream\] url"):
        cfg(mode="proxy", url="ftp://example.org/")
    (tmp_path / "pw").write_text("s3cret\n")
    got = cfg(
        mode="proxy",
        url="https://up.example/simple",
        password_file="pw",
        projects="a b*",
        latest="2",
        max_file_size="50M",
        prereleases="no",
    )
    assert got.password == "s3cret" and got.url == "https://up.example/simple/"
    assert got.projects == ("a", "b*") and got.latest == 2 and got.max_file_size == 50 * 1024**2
    assert got.prereleases is False
    with pytest.raises(ConfigError, match=r"\[upstream\] prereleases"):
        cfg(prereleases="maybe")
    # The password may come from the environment, as every secret.
    from pypi.config import load

    env = {"CLOUDPYPI_UPSTREAM_PASSWORD": "from-env", "CLOUDPYPI_UPSTREAM_URL": "https://u.example/simple/"}
    assert load(None, env).upstream.password == "from-env"


def test_filters_choose_projects_and_files():
    f = Filters(projects=("Acme-*", "numpy"), exclude=("acme-evil",))
    assert f.wants_project("acme_utils") and f.wants_project("NumPy") and not f.wants_project("acme-evil")
    assert not f.wants_project("requests")
    assert Filters().wants_project("anything")


def test_proxy_page_links_to_cdn_and_ttl_is_shared(tmp_path, db_url, tree):
    config = make_config(
        tmp_path,
        db_url,
        upstream={"url": tree.url, "mode": "proxy", "page_ttl": "3600"},
        cdn={"files_url": "https://files.example.org/packages/"},
    )
    db = Database(config.database.url)
    try:
        app = webtest.TestApp(make_app(config, db=db))
        page = app.get("/simple/tree-one/", headers=JSON).json
        assert sorted(f["filename"] for f in page["files"]) == [
            "tree_one-1.0-py3-none-any.whl",
            "tree_one-1.0.tar.gz",
        ]
        # Not pulled from upstream yet: the links are this application's own, whose first
        # download pulls the file (the CDN's origin may be the store, which lacks it).
        assert all(f["url"].startswith("/packages/") for f in page["files"]), page["files"]
        wheel = next(f for f in page["files"] if f["filename"].endswith(".whl"))
        assert app.get(wheel["url"]).body == open(tree.root / "packages" / wheel["filename"], "rb").read()
        page = app.get("/simple/tree-one/", headers=JSON).json
        links = {f["filename"]: f["url"] for f in page["files"]}
        assert links[wheel["filename"]].startswith("https://files.example.org/packages/"), links
        assert links["tree_one-1.0.tar.gz"].startswith("/packages/")
        # A second application (another worker) on the same database trusts the same fetch:
        # with upstream stopped, it still answers, without a stale warning (within the TTL).
        tree.stop()
        other = webtest.TestApp(make_app(config, db=db))
        again = other.get("/simple/tree-one/", headers=JSON)
        assert "Warning" not in again.headers and again.json["files"] == page["files"]
        # A never-seen project with upstream down: a clean 502, not a 500.
        assert other.get("/simple/never-seen/", status=502).status_int == 502
        # Every worker then answers at once for a while, without waiting for upstream again.
        assert app.get("/simple/never-seen/", status=502).status_int == 502
        with db.transaction() as tx:
            assert tx.scalar("SELECT status FROM upstream_pages WHERE normalized_name = 'never-seen'") == 599
    finally:
        db.close()


def test_mirror_engine_records_serial_and_skips_unchanged(tmp_path, db_url, tree):
    config = make_config(tmp_path, db_url, upstream={"url": tree.url, "mode": "mirror"})
    db = Database(config.database.url)
    store_dir = tmp_path / "data" / "packages"
    try:
        from pypi.commands.common import open_storage

        store = open_storage(config)
        dry = Mirror(db, store, config.upstream, tmp_dir=str(tmp_path / "tmp"), dry_run=True).run()
        assert dry.ok and dry.added == 0
        with db.transaction() as tx:
            assert (
                tx.scalar("SELECT COUNT(*) FROM files") == 0
                and tx.scalar("SELECT COUNT(*) FROM projects") == 0
            )
        assert not store_dir.exists() or not any(store_dir.rglob("*.whl"))
        report = Mirror(db, store, config.upstream, tmp_dir=str(tmp_path / "tmp"), jobs=2).run()
        assert report.ok and report.added == 2, report.summary()
        with db.transaction() as tx:
            row = tx.one("SELECT origin FROM projects WHERE normalized_name = 'tree-one'")
            files = tx.all(
                "SELECT path, sha256_digest, metadata_sha256, upstream_url FROM files ORDER BY path"
            )
        assert row["origin"] == "mirror"
        with db.transaction() as tx:  # the CDN is purged for what changed (outbox, sent after commit)
            keys = {r["purge_key"] for r in tx.all("SELECT purge_key FROM purge_outbox")}
            actions = [r["action"] for r in tx.all("SELECT action FROM journal ORDER BY id")]
        assert {"project/tree-one", "index"} <= keys
        assert actions[0] == "create" and "add source file tree_one-1.0.tar.gz" in actions
        for f in files:
            data = (store_dir / f["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == f["sha256_digest"] and f["upstream_url"]
        assert any(f["metadata_sha256"] for f in files)  # the wheel's METADATA, extracted
        second = Mirror(db, store, config.upstream, tmp_dir=str(tmp_path / "tmp")).run()
        assert second.ok and second.added == 0 and second.removed == 0
    finally:
        db.close()


def test_proxied_release_metadata_comes_from_the_pulled_file(tmp_path, db_url, tree):
    """A static upstream has no JSON API: a proxied release's metadata is empty until one
    of its files (or its .metadata) is pulled; then the JSON API shows the file's METADATA."""
    config = make_config(tmp_path, db_url, upstream={"url": tree.url, "mode": "proxy", "page_ttl": "3600"})
    db = Database(config.database.url)
    try:
        app = webtest.TestApp(make_app(config, db=db))
        page = app.get("/simple/tree-one/", headers=JSON).json
        assert app.get("/pypi/tree-one/1.0/json").json["info"]["summary"] in ("", None)
        wheel = next(f for f in page["files"] if f["filename"].endswith(".whl"))
        app.get(wheel["url"])
        info = app.get("/pypi/tree-one/1.0/json").json["info"]
        assert info["summary"] and info["name"] == "tree-one", info
        assert app.get("/pypi/tree-one/json").json["info"]["summary"] == info["summary"]
    finally:
        db.close()


def _storage_opened_in(pids_file):
    """An ``open_store`` for Mirror that notes the process opening it (a worker's pid)."""
    from pypi.commands.common import open_storage

    def open_store(config):
        with open(pids_file, "a") as f:
            f.write(f"{os.getpid()}\n")
        return open_storage(config)

    return open_store


def _in_processes(db, store, config, tmp_path, open_store, **kwargs) -> Mirror:
    """A Mirror whose downloads run in two forked worker processes, each opening its store
    with ``open_store``."""
    return Mirror(
        db,
        store,
        config.upstream,
        tmp_dir=str(tmp_path / "tmp"),
        processes=2,
        open_store=open_store,
        **kwargs,
    )


def test_mirror_worker_processes_store_and_this_process_commits(tmp_path, db_url, tree):
    """With ``processes``, forked workers download, verify and store (each its own store and
    connection); the parent commits the rows, journal and purges, as with threads."""
    from pypi.commands.common import open_storage

    config = make_config(tmp_path, db_url, upstream={"url": tree.url, "mode": "mirror"})
    db = Database(config.database.url)
    store = open_storage(config)
    pids = tmp_path / "pids"
    opener = _storage_opened_in(pids)
    try:
        report = _in_processes(db, store, config, tmp_path, lambda: opener(config), jobs=2).run()
        assert report.ok and report.added == 2, report.summary()
        workers = {int(p) for p in pids.read_text().split()}
        assert workers and os.getpid() not in workers
        with db.transaction() as tx:
            files = tx.all("SELECT path, sha256_digest FROM files")
            actions = [r["action"] for r in tx.all("SELECT action FROM journal ORDER BY id")]
        assert len(files) == 2 and actions[0] == "create"
        for f in files:
            with store.open(f["path"]) as data:
                assert hashlib.sha256(data.read()).hexdigest() == f["sha256_digest"]
        again = _in_processes(db, store, config, tmp_path, lambda: opener(config)).run()
        assert again.ok and again.added == 0
    finally:
        store.close()
        db.close()


def test_the_parent_makes_the_workers_objects_durable_before_it_commits(tmp_path, db_url, tree, monkeypatch):
    """Workers store without flushing (``batch(sync=False)``); the parent syncs every object
    of the projects that finished (files and .metadata) before committing their rows. When
    that sync fails, nothing is committed, the objects are removed and the run fails."""
    from pypi.commands.common import open_storage
    from storage.base import StorageUnavailable
    from storage.local import LocalStorage

    config = make_config(tmp_path, db_url, upstream={"url": tree.url, "mode": "mirror"})
    db = Database(config.database.url)
    store = open_storage(config)
    parent = os.getpid()
    events: list[tuple[str, set[str]]] = []
    real_sync, real_commit = LocalStorage._sync, Mirror._commit

    def sync(self, paths):
        assert os.getpid() == parent  # never in a worker
        events.append(("sync", set(paths)))
        return real_sync(self, paths)

    def commit(self, name, serial, origin, fetched):
        events.append(("commit", {s.path for s in fetched.stored.values()}))
        return real_commit(self, name, serial, origin, fetched)

    monkeypatch.setattr(LocalStorage, "_sync", sync)
    monkeypatch.setattr(Mirror, "_commit", commit)
    try:
        report = _in_processes(db, store, config, tmp_path, lambda: open_storage(config)).run()
        assert report.ok and report.added == 2, report.summary()
        (kind1, synced), (kind2, committed) = events
        assert (kind1, kind2) == ("sync", "commit") and len(committed) == 2
        wheel = next(p for p in committed if p.endswith(".whl"))
        assert synced == committed | {wheel + ".metadata"}

        def broken(self, paths):
            raise StorageUnavailable("cannot make stored objects durable: Input/output error")

        with db.transaction(write=True) as tx:
            tx.execute("DELETE FROM files")
        for o in list(store.list("packages/")):
            store.delete(o.path)
        monkeypatch.setattr(LocalStorage, "_sync", broken)
        report = _in_processes(db, store, config, tmp_path, lambda: open_storage(config)).run()
        assert not report.ok and "Input/output error" in report.summary()
        with db.transaction() as tx:
            assert tx.scalar("SELECT COUNT(*) FROM files") == 0
        assert list(store.list("packages/")) == []
    finally:
        store.close()
        db.close()


def test_a_mirror_stopped_between_store_and_commit_leaves_only_orphans(tmp_path, db_url, tree, monkeypatch):
    """The workers stored a project's files, then the run stops before its rows are committed:
    no row exists without its object, fsck lists the stored objects as orphans, and the next
    run commits them (downloading again) and leaves fsck clean."""
    from pypi.cli import main
    from pypi.commands.common import open_storage
    from tests.services.live_server import write_config

    config = make_config(tmp_path, db_url, upstream={"url": tree.url, "mode": "mirror"})
    ini = write_config(
        str(tmp_path / "config.ini"),
        {
            "server": {"data_dir": str(tmp_path / "data")},
            "database": {"url": db_url},
            "storage": {"backend": "local"},
        },
    )
    db = Database(config.database.url)
    store = open_storage(config)
    opener = _storage_opened_in(tmp_path / "pids")

    def mirror():
        return _in_processes(db, store, config, tmp_path, lambda: opener(config))

    def stopped(self, *args):
        raise KeyboardInterrupt  # as if the process were stopped right before the commit

    try:
        with monkeypatch.context() as m:
            m.setattr(Mirror, "_commit", stopped)
            with pytest.raises(KeyboardInterrupt):
                mirror().run()
        with db.transaction() as tx:
            assert tx.scalar("SELECT COUNT(*) FROM files") == 0
        stored = [o.path for o in store.list("packages/")]
        assert any(p.endswith(".whl") for p in stored) and any(p.endswith(".tar.gz") for p in stored)
        assert main(["fsck", "--config", ini]) == 1
        report = mirror().run()
        assert report.ok and report.added == 2, report.summary()
        assert main(["fsck", "--config", ini]) == 0
    finally:
        store.close()
        db.close()


class _Recording:
    """A tiny HTTP/1.1 server on 127.0.0.1 noting each request's path, Authorization header
    and client port; ``routes``: path -> (status, headers, body); ``drop``: close every
    connection after its answer without saying so (as a server whose keep-alive timed out)."""

    def __init__(self, routes, *, drop=False):
        import http.server
        import threading

        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                seen.append((self.path, self.headers.get("Authorization"), self.client_address[1]))
                status, headers, body = routes[self.path]
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = drop

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_client_keeps_connections_and_sends_credentials_only_to_upstreams_host():
    from pypi.upstream.client import UpstreamClient

    elsewhere = _Recording({"/file": (200, {}, b"file bytes")})
    upstream = _Recording(
        {
            "/simple/page/": (200, {}, b"page"),
            "/simple/moved": (302, {"Location": elsewhere.url + "/file"}, b"moved"),
        }
    )
    try:
        client = UpstreamClient(
            upstream.url + "/simple/",
            username="u",
            password="secret",
            connections=1,
            file_hosts=(elsewhere.url.removeprefix("http://"),),
        )
        assert client.fetch_bytes(upstream.url + "/simple/page/") == b"page"
        assert client.fetch_bytes(upstream.url + "/simple/page/") == b"page"
        assert client.fetch_bytes(upstream.url + "/simple/moved") == b"file bytes"
        (p1, auth1, port1), (p2, auth2, port2), (p3, auth3, _port3) = upstream.seen
        assert auth1 and auth1 == auth2 == auth3 and auth1.startswith("Basic ")
        assert port1 == port2  # the second request went on the kept connection
        [(path, auth, _port)] = elsewhere.seen
        assert path == "/file" and auth is None  # the redirect left upstream's host: no credentials
        client.close()
    finally:
        upstream.stop()
        elsewhere.stop()


def test_client_retries_once_on_a_kept_connection_the_server_closed():
    from pypi.upstream.client import UpstreamClient

    upstream = _Recording({"/simple/a/": (200, {}, b"a"), "/simple/b/": (200, {}, b"b")}, drop=True)
    try:
        client = UpstreamClient(upstream.url + "/simple/", connections=1)
        assert client.fetch_bytes(upstream.url + "/simple/a/") == b"a"
        assert client.fetch_bytes(upstream.url + "/simple/b/") == b"b"
        assert [p for p, _a, _port in upstream.seen] == ["/simple/a/", "/simple/b/"]
        assert upstream.seen[0][2] != upstream.seen[1][2]  # the answer came on a new connection
    finally:
        upstream.stop()


def test_a_worker_process_that_dies_is_a_failure_of_the_run(tmp_path, db_url, tree, monkeypatch):
    """A worker killed mid-project (out of memory, a signal) fails the run with a summary
    (the saved serial does not move), rather than crashing or hanging it."""
    from pypi.commands.common import open_storage

    config = make_config(tmp_path, db_url, upstream={"url": tree.url, "mode": "mirror"})
    db = Database(config.database.url)
    store = open_storage(config)
    monkeypatch.setattr(Mirror, "_download", lambda self, *args, **kw: os._exit(9))  # runs in the worker
    try:
        report = _in_processes(db, store, config, tmp_path, lambda: open_storage(config)).run()
        assert not report.ok and "worker process" in report.summary()
        with db.transaction() as tx:
            assert tx.scalar("SELECT COUNT(*) FROM files") == 0
    finally:
        store.close()
        db.close()


@pytest.mark.parametrize(
    "location", ["http://127.0.0.1:notaport/x", "http://127.0.0.1/a b\r\nX-Evil: 1", "ftp://127.0.0.1/x"]
)
def test_a_malformed_redirect_is_an_upstream_error(location):
    """A hostile upstream's Location is a clear UpstreamError (the proxy answers 502), never a
    ValueError escaping as a 500."""
    from pypi.upstream.client import UpstreamClient, UpstreamUnavailable

    upstream = _Recording({"/simple/moved/": (302, {"Location": location}, b"")})
    try:
        client = UpstreamClient(upstream.url + "/simple/", connections=1)
        with pytest.raises(UpstreamUnavailable):
            client.fetch_bytes(upstream.url + "/simple/moved/")
    finally:
        upstream.stop()
