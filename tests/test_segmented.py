"""Whole-index pages kept as segments (pypi.index.segmented): a change re-renders only the
segments it touches, the page is byte-identical to a full render, its gzip form is one member
that decompresses to exactly the page, and readers who see every public project share it."""

from __future__ import annotations

import gzip
import xmlrpc.client
import zlib

import pytest
import webtest

from pypi.app import make_app
from pypi.index import access, journal, packages, segmented
from pypi.index.render_cache import size_of
from pypi.index.shared_pages import make_page
from pypi.views import simple, xmlrpc_lists
from tests.dists import make_wheel
from tests.uploading import upload

JSON = "application/vnd.pypi.simple.v1+json"
HTML_PAGE = "segmented/simple/html"


@pytest.fixture(autouse=True)
def small_segments(monkeypatch):
    monkeypatch.setattr(segmented, "SEGMENT_ROWS", 3)


def add(db, *names):
    with db.transaction(write=True) as tx:
        for name in names:
            packages.create_project(tx, name)
            journal.record(tx, name, None, "create", None)


def remove(db, name):
    with db.transaction(write=True) as tx:
        tx.execute("DELETE FROM projects WHERE normalized_name = ?", (packages.canonicalize_name(name),))
        journal.record(tx, name, None, "remove project", None)


def segments(db, page=HTML_PAGE):
    with db.reading() as tx:
        rows = tx.all("SELECT lo, version, etag, entries FROM stored_segments WHERE page = ?", (page,))
    return {r["lo"]: (int(r["version"]), r["etag"], int(r["entries"])) for r in rows}


def full_html(db, vis=None):
    with db.transaction() as tx:
        return b"".join(simple._render_index_html(tx, vis))


def raw(app, path, headers):
    from webob import Request

    return Request.blank(path, headers=headers).get_response(app)


def test_a_new_name_is_one_insertion_not_a_rebuild(app, testapp, db):
    add(db, *[f"p{i:02d}" for i in range(0, 30, 2)])  # p00, p02, ... p28: five segments of three
    first = testapp.get("/simple/")
    before = segments(db)
    assert len(before) == 5 and first.body == full_html(db)
    add(db, "p13")  # inside the segment p12, p14, p16
    fresh = testapp.get("/simple/")
    assert '<a href="/simple/p13/">p13</a>' in fresh.text
    assert fresh.body == full_html(db)  # byte-identical to rendering every name
    after = segments(db)
    changed = {lo for lo in after if after[lo] != before.get(lo)}
    assert changed == {"p12"} and after["p12"][2] == 4
    assert {lo: after[lo] for lo in after if lo != "p12"} == {lo: before[lo] for lo in before if lo != "p12"}
    packed = raw(app, "/simple/", {"Accept-Encoding": "gzip"})
    assert gzip.decompress(packed.body) == fresh.body
    one = zlib.decompressobj(31)  # one gzip member: decoders that stop after the first read it whole
    assert one.decompress(packed.body) == fresh.body and one.eof and not one.unused_data


def test_a_grown_segment_splits_and_an_emptied_one_goes(testapp, db):
    add(db, "a", "m", "z")
    testapp.get("/simple/")
    assert list(segments(db)) == [""]
    add(db, "b", "c", "d", "e", "f", "g")  # nine names in one segment: split into three
    assert testapp.get("/simple/").body == full_html(db)
    assert sorted(segments(db)) == ["", "d", "g"]
    for name in ("d", "e", "f"):
        remove(db, name)
    page = testapp.get("/simple/")
    assert page.body == full_html(db) and "/simple/e/" not in page.text
    assert sorted(segments(db)) == ["", "g"]


def test_many_changes_rebuild_the_page_whole(testapp, db, monkeypatch):
    add(db, "a", "b")
    testapp.get("/simple/")
    monkeypatch.setattr(segmented, "MAX_CHANGES", 2)
    add(db, "c", "d", "e")
    assert testapp.get("/simple/").body == full_html(db)
    assert len({v for v, _e, _n in segments(db).values()}) == 1  # every segment from one build


def test_json_index_and_xmlrpc_lists_are_the_full_renders(testapp, db, users, tmp_path):
    add(db, "A&B", "less<than", "Zürich-Tool", *[f"n{i}" for i in range(7)])
    upload(testapp, make_wheel(str(tmp_path), "up", "1.0"), name="up", version="1.0")
    page = testapp.get("/simple/", headers={"Accept": JSON})
    serial = int(page.headers["X-PyPI-Last-Serial"])
    with db.transaction() as tx:
        assert page.body == b"".join(simple._render_index_json(tx, serial))
        expected = {m: xmlrpc_lists.WRITERS[m](tx) for m in xmlrpc_lists.SHARED}
    for method, body in expected.items():
        r = testapp.post(
            "/RPC2", xmlrpc.client.dumps((), method).encode(), headers={"Content-Type": "text/xml"}
        )
        assert r.body == body, method
    assert xmlrpc.client.loads(r.body)[0][0]["up"] == serial


def test_crc32_of_a_concatenation_from_its_parts():
    a, b = b"the first part " * 1000, b"and the second" * 777
    assert segmented.crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)
    assert segmented.crc32_combine(zlib.crc32(a), zlib.crc32(b""), 0) == zlib.crc32(a)


# -- readers from whom the private projects are hidden share one page too ----------------


@pytest.fixture
def with_private(testapp, db, users, tmp_path):
    for name in ("Secret.Pkg", "Open.Pkg", "Other"):
        upload(testapp, make_wheel(str(tmp_path), name, "1.0"), name=name, version="1.0")
    with db.transaction(write=True) as tx:
        assert access.set_visibility(tx, packages.get_project(tx, "Secret.Pkg"), True)
    return testapp


def test_anonymous_simple_index_with_a_private_project_is_rendered_once_per_deployment(
    with_private, db, config, monkeypatch
):
    first = with_private.get("/simple/")
    listing = with_private.post(
        "/RPC2", xmlrpc.client.dumps((), "list_packages").encode(), headers={"Content-Type": "text/xml"}
    )
    assert "secret" not in first.text.lower() and "/simple/open-pkg/" in first.text
    assert xmlrpc.client.loads(listing.body)[0][0] == ["Open.Pkg", "Other"]
    assert segments(db, HTML_PAGE + "/public")
    assert first.body == full_html(db, access.Visibility(frozenset({"secret-pkg"})))
    other = webtest.TestApp(make_app(config, db=db))  # a second process on the same database
    monkeypatch.setattr(segmented, "_put", lambda *a, **k: pytest.fail("rendered again"))
    monkeypatch.setattr(simple, "_render_index_html", lambda *a, **k: pytest.fail("rendered per process"))
    assert other.get("/simple/").body == first.body
    again = other.post(
        "/RPC2", xmlrpc.client.dumps((), "list_packages").encode(), headers={"Content-Type": "text/xml"}
    )
    assert again.body == listing.body


def test_showing_a_private_project_updates_the_public_page(with_private, db):
    assert "open-pkg" in with_private.get("/simple/").text
    with db.transaction(write=True) as tx:
        access.set_visibility(tx, packages.get_project(tx, "Secret.Pkg"), False)
    shown = with_private.get("/simple/")
    assert "/simple/secret-pkg/" in shown.text and shown.body == full_html(db)


def test_downloads_need_no_file_lookup_with_private_projects_present(with_private, db, monkeypatch):
    def path_of(name):
        with db.transaction() as tx:
            return packages.project_files(tx, packages.get_project(tx, name)["id"])[0]["path"]

    public, secret = path_of("Other"), path_of("Secret.Pkg")
    monkeypatch.setattr(access, "file_project", lambda *a: pytest.fail("a lookup per download"))
    assert with_private.get("/" + public).status_int == 200
    assert with_private.get("/" + public + ".metadata").status_int == 200
    with_private.get("/" + secret, status=404)
    with db.transaction(write=True) as tx:  # public now: the held set follows the serial
        access.set_visibility(tx, packages.get_project(tx, "Secret.Pkg"), False)
    assert with_private.get("/" + secret).status_int == 200


def test_the_render_cache_counts_the_bytes_of_a_page():
    page = make_page(b"x" * 100_000, "1")
    assert size_of(page) >= 100_000 + len(page.gzip)


def test_a_cold_process_reads_the_stored_page_once_whatever_its_threads(db, monkeypatch):
    import threading
    import time

    add(db, *[f"n{i}" for i in range(10)])
    spec = simple.SPECS["html", False]
    with db.reading() as tx:
        version = int(tx.scalar(spec.version_sql))
    segmented.SegmentedPages(db).get(spec, version)  # stored by "another process"
    pages = segmented.SegmentedPages(db)
    calls = []
    real = pages._load

    def slow_load(*args):
        calls.append(1)
        time.sleep(0.05)  # the other threads arrive while this one reads
        return real(*args)

    monkeypatch.setattr(pages, "_load", slow_load)
    start = threading.Barrier(4)
    got = []

    def reader():
        start.wait()
        got.append(pages.get(spec, version))

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(got) == 4 and len({id(p) for p in got}) == 1 and calls == [1]


ODD_NAMES = ["A&B", 'q"uote', 'x", "y', "back\\", "nul\x00l", "Zürich", "<t>"]


@pytest.mark.parametrize("names", [[], ["a"], ODD_NAMES])
def test_batch_escaping_is_escaping_each(names):
    import html
    import json

    assert segmented.escaped(names, html.escape) == [html.escape(n) for n in names]
    assert segmented.json_strings(names) == [json.dumps(n) for n in names]
