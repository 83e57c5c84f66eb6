"""/packages/: one request to the store per download, ranges asked of the store, 416s
that no cache keeps, the Content-Type the object was stored with, and local objects
a web server can read."""

from __future__ import annotations

import io
import os
import stat

import pytest
import webtest

from pypi.app import make_app
from pypi.index.db import Database
from storage.local import LocalStorage
from tests.backends import Wrapped
from tests.conftest import make_config
from tests.dists import make_sdist, make_wheel
from tests.uploading import upload


class Counting(Wrapped):
    """Counts the requests the application makes of the store."""

    def __init__(self, inner):
        super().__init__(inner)
        self.calls: list[tuple] = []

    def _open(self, path, start, stop):
        self.calls.append(("open", start, stop))
        return super()._open(path, start, stop)

    def _stat(self, path):
        self.calls.append(("stat",))
        return super()._stat(path)


@pytest.fixture
def served(tmp_path, users_db):
    """(testapp, store, path of the wheel, its bytes, path of the sdist, its bytes)."""
    config, db = users_db
    store = Counting(LocalStorage(root=os.path.join(config.data_dir, "packages")))
    app = webtest.TestApp(make_app(config, db=db, store=store))
    found = {}
    for dist in (
        make_wheel(str(tmp_path), "served", "1.0", extra_bytes=20_000),
        make_sdist(str(tmp_path), "served", "1.0"),
    ):
        upload(app, dist, name="served", version="1.0")
        with open(dist, "rb") as f:
            found[dist.rsplit(".", 2)[-1]] = f.read()
    files = app.get("/simple/served/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}).json
    urls = {f["filename"].rsplit(".", 2)[-1]: f["url"].split("#")[0] for f in files["files"]}
    wheel_url = urls["whl"][urls["whl"].index("/packages/") :]
    sdist_url = urls["gz"][urls["gz"].index("/packages/") :]
    store.calls.clear()
    return app, store, wheel_url, found["whl"], sdist_url, found["gz"]


@pytest.fixture
def users_db(tmp_path):
    from pypi.index import auth
    from tests.conftest import PASSWORD

    config = make_config(tmp_path, f"sqlite:///{tmp_path}/t.sqlite3")
    db = Database(config.database.url)
    db.migrate()
    with db.transaction(write=True) as tx:
        auth.create_user(tx, "alice", PASSWORD)
    yield config, db
    db.close()


def test_a_download_is_one_get_to_the_store(served):
    app, store, url, data, *_ = served
    r = app.get(url, status=200)
    assert r.body == data and r.content_length == len(data)
    assert r.headers["ETag"] and r.headers["Last-Modified"]
    assert store.calls == [("open", 0, None)]


def test_a_range_is_asked_of_the_store(served):
    app, store, url, data, *_ = served
    r = app.get(url, headers={"Range": "bytes=100-199"}, status=206)
    assert r.body == data[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert store.calls == [("open", 100, 200)]
    store.calls.clear()
    r = app.get(url, headers={"Range": "bytes=-10"}, status=206)
    assert r.body == data[-10:] and store.calls == [("open", -10, None)]
    assert r.headers["Content-Range"] == f"bytes {len(data) - 10}-{len(data) - 1}/{len(data)}"


def test_a_stale_if_range_gets_the_whole_file(served):
    app, _, url, data, *_ = served
    r = app.get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'}, status=200)
    assert r.body == data
    etag = app.get(url).headers["ETag"]
    r = app.get(url, headers={"Range": "bytes=0-9", "If-Range": etag}, status=206)
    assert r.body == data[:10]


def test_several_ranges_get_the_whole_file(served):
    app, _, url, data, *_ = served
    assert app.get(url, headers={"Range": "bytes=0-1,5-6"}, status=200).body == data


@pytest.mark.parametrize("header", ["bytes=-0", "bytes=999999999-"])
def test_an_unsatisfiable_range_is_416_and_never_cached(served, header):
    app, _, url, data, *_ = served
    r = app.get(url, headers={"Range": header}, status=416)
    assert r.headers["Content-Range"] == f"bytes */{len(data)}"
    assert r.headers["Cache-Control"] == "private, no-store"
    assert "immutable" not in r.headers["Cache-Control"]


def test_not_modified_costs_no_body(served):
    app, store, url, *_ = served
    etag = app.get(url).headers["ETag"]
    r = app.get(url, headers={"If-None-Match": etag}, status=304)
    assert r.body == b"" and r.headers["ETag"] == etag and "immutable" in r.headers["Cache-Control"]
    r = app.head(url, headers={"If-None-Match": etag}, status=304)


def test_head_is_one_stat(served):
    app, store, url, data, *_ = served
    r = app.head(url, status=200)
    assert int(r.headers["Content-Length"]) == len(data)
    assert store.calls == [("stat",)]


def test_sdist_is_stored_and_served_as_gzip(served):
    app, store, _, _, url, data = served
    r = app.get(url, status=200)
    assert r.body == data
    assert r.content_type == "application/gzip"
    assert "Content-Encoding" not in r.headers
    path = "packages/" + url[len("/packages/") :]
    assert store.stat(path).content_type == r.content_type


def test_local_objects_and_folders_are_world_readable(served):
    _, store, url, *_ = served
    old = os.umask(0o077)
    try:
        store.inner.put("packages/zz/yy/new/file.whl", io.BytesIO(b"x"))
    finally:
        os.umask(old)
    full = os.path.join(store.inner.root, "packages", "zz", "yy", "new", "file.whl")
    assert stat.S_IMODE(os.stat(full).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(os.path.dirname(full)).st_mode) == 0o755
    uploaded = os.path.join(store.inner.root, "packages", *url[len("/packages/") :].split("/"))
    assert stat.S_IMODE(os.stat(uploaded).st_mode) == 0o644  # hard-linked from the 0600 spool
    assert stat.S_IMODE(os.stat(os.path.dirname(uploaded)).st_mode) == 0o755
