"""Issue 12: what keeps the index fast at pypi.org's size, checked on small data.

The figures at size come from ``python -m benchmarks scale``; these tests check
the behaviour that gets them: shared stored pages, gzip, indexes the hot
queries use, byte-bounded caches, XML-RPC lists written from a cursor.
"""

from __future__ import annotations

import gzip
import xmlrpc.client
from types import SimpleNamespace

import pytest

from pypi.index import db as dbmod
from pypi.index import journal, packages, segmented, shared_pages, stream
from pypi.index.render_cache import RenderCache
from pypi.views import xmlrpc_lists
from tests.dists import make_wheel
from tests.uploading import upload

JSON = "application/vnd.pypi.simple.v1+json"
#: Names that need escaping in XML and HTML, and non-ASCII.
ODD = ["A&B", "less<than", "Zürich-Tool", "plain"]


def add_projects(db, names):
    with db.transaction(write=True) as tx:
        for name in names:
            packages.create_project(tx, name)
            journal.record(tx, name, None, "create", None)
            journal.record(tx, name, "1.0", "new release", "alice")


HTML_PAGE = "segmented/simple/html"


def stored_row(db, page):
    with db.reading() as tx:
        return tx.one("SELECT version, rendered FROM stored_pages WHERE page = ?", (page,))


# -- XML-RPC lists -----------------------------------------------------------


@pytest.mark.parametrize("method", ["list_packages", "list_packages_with_serial", "changelog_since_serial"])
def test_xmlrpc_lists_are_the_bytes_dumps_writes(testapp, db, method):
    add_projects(db, ODD)
    params = (0,) if method == "changelog_since_serial" else ()
    with db.transaction() as tx:
        from pypi.views import xmlrpc as views

        anonymous_public = SimpleNamespace(config=SimpleNamespace(access=SimpleNamespace(read="public")))
        expected_value = views.METHODS[method](anonymous_public, tx, *params)
        streamed = xmlrpc_lists.WRITERS[method](tx, *params)
    expected = xmlrpc.client.dumps((expected_value,), methodresponse=True, encoding="utf-8")
    assert streamed == expected.encode("utf-8")
    body = xmlrpc.client.dumps(params, method).encode()
    r = testapp.post("/pypi", body, headers={"Content-Type": "text/xml"})
    assert r.body == streamed
    assert xmlrpc.client.loads(r.body) == xmlrpc.client.loads(expected)


def test_xmlrpc_changelog_refuses_a_non_integer_serial(testapp):
    r = testapp.post(
        "/RPC2",
        xmlrpc.client.dumps(("7",), "changelog_since_serial").encode(),
        headers={"Content-Type": "text/xml"},
    )
    with pytest.raises(xmlrpc.client.Fault, match="serial must be an integer"):
        xmlrpc.client.loads(r.body)


# -- /simple/ stored once for the deployment -----------------------------------


def segment_rows(db, page):
    with db.reading() as tx:
        return {
            r["lo"]: (r["version"], r["etag"])
            for r in tx.all("SELECT lo, version, etag FROM stored_segments WHERE page = ?", (page,))
        }


def test_simple_index_html_is_stored_and_not_rerendered_for_an_upload_to_an_existing_project(
    testapp, db, users, tmp_path
):
    upload(testapp, make_wheel(str(tmp_path), "Alpha", "1.0"), name="Alpha", version="1.0")
    first = testapp.get("/simple/")
    assert '<a href="/simple/alpha/">Alpha</a>' in first.text
    row = stored_row(db, HTML_PAGE)
    segments = segment_rows(db, HTML_PAGE)
    assert row is not None and segments
    upload(testapp, make_wheel(str(tmp_path), "Alpha", "1.1"), name="Alpha", version="1.1")
    again = testapp.get("/simple/")
    assert again.body == first.body and again.etag == first.etag
    assert stored_row(db, HTML_PAGE) == row and segment_rows(db, HTML_PAGE) == segments  # not rendered again
    upload(testapp, make_wheel(str(tmp_path), "Beta", "1.0"), name="Beta", version="1.0")
    fresh = testapp.get("/simple/")
    assert '<a href="/simple/beta/">Beta</a>' in fresh.text
    assert stored_row(db, HTML_PAGE)["version"] != row["version"]


def test_a_second_process_serves_the_stored_simple_index_without_rendering(testapp, db, config, monkeypatch):
    add_projects(db, ODD)
    first = testapp.get("/simple/", headers={"Accept": JSON})
    import webtest

    from pypi.app import make_app

    other = webtest.TestApp(make_app(config, db=db))  # another process: its own memory, same database
    monkeypatch.setattr(segmented, "_put", lambda *a, **k: pytest.fail("rendered again"))
    monkeypatch.setattr(shared_pages, "make_page", lambda *a, **k: pytest.fail("rendered again"))
    second = other.get("/simple/", headers={"Accept": JSON})
    assert second.body == first.body
    assert [p["name"] for p in second.json["projects"]] == sorted(ODD, key=packages.canonicalize_name)
    assert second.json["meta"]["_last-serial"] == int(second.headers["X-PyPI-Last-Serial"])


def test_simple_index_json_and_html_escape_odd_names(testapp, db):
    add_projects(db, ODD)
    html = testapp.get("/simple/").text
    assert (
        '<a href="/simple/a&amp;b/">A&amp;B</a>' in html and "less&lt;than" in html and "Zürich-Tool" in html
    )
    projects = testapp.get("/simple/", headers={"Accept": JSON}).json["projects"]
    assert {"name": "Zürich-Tool", "_last-serial": 6} in projects  # two journal rows per project


# -- gzip ----------------------------------------------------------------------


def raw_get(app, path, headers, status=200):
    """The response as sent (WebTest's TestApp decodes gzip bodies itself)."""
    from webob import Request

    response = Request.blank(path, headers=headers).get_response(app)
    assert response.status_int == status, response.status
    return response


@pytest.mark.parametrize(
    "path,accept",
    [("/simple/", "text/html"), ("/simple/alpha/", JSON), ("/pypi/alpha/json", "*/*"), ("/simple/", JSON)],
)
def test_gzip_offered_with_its_own_etag(app, testapp, users, tmp_path, path, accept):
    upload(testapp, make_wheel(str(tmp_path), "Alpha", "1.0"), name="Alpha", version="1.0")
    plain = raw_get(app, path, {"Accept": accept, "Accept-Encoding": "identity"})
    packed = raw_get(app, path, {"Accept": accept, "Accept-Encoding": "gzip, deflate"})
    assert "Content-Encoding" not in plain.headers
    assert packed.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(packed.body) == plain.body
    assert packed.headers["ETag"] != plain.headers["ETag"]
    assert "Accept-Encoding" in packed.headers["Vary"] and "Accept-Encoding" in plain.headers["Vary"]
    refused = raw_get(app, path, {"Accept": accept, "Accept-Encoding": "gzip;q=0"})
    assert refused.body == plain.body
    again = raw_get(
        app,
        path,
        {"Accept": accept, "Accept-Encoding": "gzip", "If-None-Match": packed.headers["ETag"]},
        status=304,
    )
    assert not again.body


# -- large project pages shared by serial -----------------------------------------


def test_large_project_pages_are_stored_by_serial(testapp, db, users, tmp_path, monkeypatch):
    monkeypatch.setattr(shared_pages, "STORE_MIN_BYTES", 100)
    upload(testapp, make_wheel(str(tmp_path), "Alpha", "1.0"), name="Alpha", version="1.0")
    page = testapp.get("/simple/alpha/", headers={"Accept": JSON})
    row = stored_row(db, "simple/alpha/json")
    assert row is not None and row["version"].startswith(page.headers["X-PyPI-Last-Serial"] + " ")
    testapp.get("/pypi/alpha/json")
    assert stored_row(db, "json/alpha/") is not None
    upload(testapp, make_wheel(str(tmp_path), "Alpha", "1.1"), name="Alpha", version="1.1")
    newer = testapp.get("/simple/alpha/", headers={"Accept": JSON})
    assert len(newer.json["files"]) == 2
    assert stored_row(db, "simple/alpha/json")["version"].startswith(newer.headers["X-PyPI-Last-Serial"])


# -- render cache ------------------------------------------------------------------


def test_render_cache_is_bounded_by_bytes():
    cache = RenderCache(max_bytes=10_000)
    for i in range(100):
        cache.put(i, b"x" * 1000)
    assert cache.bytes <= 10_000 and 5 <= len(cache) <= 10
    assert cache.get(99) == b"x" * 1000 and cache.get(0) is None
    cache.put("huge", b"x" * 5000)  # over a quarter of the bound: not kept
    assert cache.get("huge") is None
    assert cache.get_or_render("k", lambda: (b"abc", "etag")) == (b"abc", "etag")
    assert cache.get("k") == (b"abc", "etag")
    assert RenderCache(0).get_or_render("k", lambda: b"v") == b"v" and len(RenderCache(0)) == 0


def test_render_cache_size_setting(tmp_path):
    from pypi import config as cfg

    built = cfg.build({"webui": {"render_cache_size": "8M"}}, base_dir=str(tmp_path))
    assert built.webui.render_cache_size == 8 * 1024 * 1024
    with pytest.raises(cfg.ConfigError, match="render_cache_size"):
        cfg.build({"webui": {"render_cache_size": "lots"}}, base_dir=str(tmp_path))


# -- queries and indexes -------------------------------------------------------------


def plan(db, sql, params=()):
    with db.transaction() as tx:
        if tx.dialect == "sqlite":
            return " ".join(str(tuple(r)) for r in tx.all("EXPLAIN QUERY PLAN " + sql, params))
        tx.execute("SET LOCAL enable_seqscan = off")  # small tables: ask whether an index can serve
        return " ".join(r["QUERY PLAN"] for r in tx.all("EXPLAIN " + sql, params))


@pytest.mark.parametrize(
    "sql,params,index",
    [
        ("UPDATE projects SET last_serial = ? WHERE normalized_name = ?", (1, "x"), "projects_"),
        (
            "SELECT name FROM projects WHERE normalized_name LIKE ? ORDER BY normalized_name LIMIT 10",
            ("ab%",),
            "projects_name_prefix",
        ),
        (segmented.NAME_SET_SQL, (), "journal_names"),
    ],
)
def test_hot_queries_use_an_index(db, sql, params, index):
    shown = plan(db, sql, params)
    if db.dialect == "sqlite" and "LIKE" in sql:
        pytest.skip("SQLite: search uses a range on the unique index (next test)")
    assert index in shown, shown


def test_search_is_a_prefix_match(testapp, db):
    add_projects(db, ["requests", "requests-oauth", "django-requests", "Req"])
    with db.transaction() as tx:
        assert [p["name"] for p in packages.search_projects(tx, "Requests")] == ["requests", "requests-oauth"]
        assert [p["name"] for p in packages.search_projects(tx, "re")] == [
            "Req",
            "requests",
            "requests-oauth",
        ]
    if db.dialect == "sqlite":
        assert "USING" in plan(
            db,
            "SELECT name FROM projects WHERE normalized_name >= ? AND normalized_name < ?",
            ("re", "re\x7f"),
        )


def test_home_counts_are_estimates_above_the_limit(testapp, db, monkeypatch):
    add_projects(db, ["one", "two"])
    with db.transaction() as tx:
        assert packages.index_counts(tx) == (2, 0, 0, False)
    if db.dialect != "postgresql":
        return
    with db.transaction(write=True) as tx:
        tx.execute("ANALYZE projects")
        tx.execute("ANALYZE releases")
        tx.execute("ANALYZE files")
    monkeypatch.setattr(packages, "EXACT_COUNT_LIMIT", -2)  # every table counts as large
    with db.transaction() as tx:
        assert packages.index_counts(tx)[3] is True
    assert "About (estimated)" in testapp.get("/").text


def test_stream_rows_are_tuples_in_and_out_of_transactions(db):
    add_projects(db, [f"p{i}" for i in range(25)])
    sql = "SELECT normalized_name, last_serial FROM projects ORDER BY normalized_name"
    with db.transaction() as tx:
        inside = list(stream.rows(tx, sql, batch=7))
    with db.reading() as tx:
        outside = list(stream.rows(tx, sql, batch=7))
    assert inside == outside and len(inside) == 25 and isinstance(inside[0], tuple)
    walked = list(
        stream.keyset(
            db.transaction, "SELECT normalized_name, last_serial FROM projects", "normalized_name", batch=4
        )
    )
    assert walked == inside


def test_migration_words_per_dialect():
    assert dbmod._WORDS["postgresql"]["blob"] == "BYTEA" and dbmod._WORDS["sqlite"]["blob"] == "BLOB"


# -- fsck and migrate-storage stream ------------------------------------------------


def test_referenced_objects_stream_in_path_order_in_pages(db, users, testapp, tmp_path):
    for name in ("zeta", "alpha", "mid"):
        upload(testapp, make_wheel(str(tmp_path), name, "1.0"), name=name, version="1.0")
    from pypi.index import objects

    with db.transaction() as tx:
        expected = sorted(objects.referenced(tx), key=lambda o: o.path)
    streamed = list(stream.referenced_objects(db, batch=1))  # one file row per page
    assert [o.path for o in streamed] == [o.path for o in expected] and len(streamed) == 6
    assert streamed == expected


def test_fsck_is_right_when_a_store_lists_out_of_order(db, users, testapp, tmp_path, app):
    import io

    from pypi.operations import fsck

    upload(testapp, make_wheel(str(tmp_path), "alpha", "1.0"), name="alpha", version="1.0")
    upload(testapp, make_wheel(str(tmp_path), "beta", "1.0"), name="beta", version="1.0")
    store = app.services.storage
    store.put("packages/00/00/stray.whl", io.BytesIO(b"x"))
    store.put("packages/ff/ff/stray.whl", io.BytesIO(b"y"))
    in_order = fsck.check(db, store, min_age=0)

    class Reversed:  # the contract promises no order
        def __getattr__(self, name):
            return getattr(store, name)

        def list(self, prefix=""):
            return iter(sorted(store.list(prefix), key=lambda i: i.path, reverse=True))

    shuffled = fsck.check(db, Reversed(), min_age=0)
    for report in (in_order, shuffled):
        assert (report.referenced, report.stored) == (4, 6)
        assert [p.path for p in report.of_kind("orphan")] == [
            "packages/00/00/stray.whl",
            "packages/ff/ff/stray.whl",
        ]
        assert not report.of_kind("missing")


def test_migration_reads_a_stream_as_it_copies(tmp_path):
    import storage as storage_mod
    from pypi.operations.copy_objects import Migration

    consumed = []

    def objects():
        for i in range(3):
            consumed.append(i)
            yield from ()

    source = storage_mod.from_config(
        {"backend": "local", "path": str(tmp_path / "a")}, data_dir=str(tmp_path)
    )
    target = storage_mod.from_config(
        {"backend": "local", "path": str(tmp_path / "b")}, data_dir=str(tmp_path)
    )
    result = Migration(source, target, dry_run=True).run(objects(), total=0)
    assert result.total == 0 and consumed == [0, 1, 2]


def test_the_simple_index_is_sent_whole_to_identity_clients(app, testapp, db):
    add_projects(db, [f"p{i}" for i in range(300)])
    plain = raw_get(app, "/simple/", {"Accept-Encoding": "identity"})
    held = app.services.segments.held(HTML_PAGE)
    assert held.length == len(plain.body) == int(plain.headers["Content-Length"])
    assert plain.body.count(b"<a href=") == 300 and gzip.decompress(b"".join(held.gzip_iter())) == plain.body


def test_a_large_page_is_loaded_once_while_other_threads_wait():
    import threading
    import time as _time

    cache = RenderCache()
    started, go, calls = threading.Event(), threading.Event(), []

    def slow():
        calls.append(1)
        started.set()
        go.wait(5)
        return b"page"

    first = threading.Thread(target=cache.get_or_load, args=("k", slow))
    first.start()
    started.wait(5)
    results = []
    second = threading.Thread(target=lambda: results.append(cache.get_or_load("k", slow)))
    second.start()
    _time.sleep(0.05)  # the second thread is waiting for the first one's load
    go.set()
    first.join(5)
    second.join(5)
    assert results == [b"page"] and calls == [1]
