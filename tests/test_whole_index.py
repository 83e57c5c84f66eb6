"""The whole-index pages (/simple/, XML-RPC lists) are stored before the first request:
``cloudpypi initdb`` and ``cloudpypi serve`` (before its workers start) build them, so the
first list call only reads them; a request while another process still builds one waits at
most LOCK_WAIT seconds and is then answered from the database, correctly."""

from __future__ import annotations

import threading
import xmlrpc.client

import pytest
import webtest

from pypi import cli
from pypi.app import make_app
from pypi.commands import serve as serve_command
from pypi.index import access, segmented
from pypi.index.db import Database
from pypi.views import simple, whole_index, xmlrpc_lists
from tests.test_segmented import add, full_html, segments

JSON = "application/vnd.pypi.simple.v1+json"
XML = {"Content-Type": "text/xml"}


@pytest.fixture(autouse=True)
def small_segments(monkeypatch):
    monkeypatch.setattr(segmented, "SEGMENT_ROWS", 3)


def config_file(tmp_path, db_url: str) -> str:
    path = tmp_path / "config.ini"
    path.write_text(
        f"[server]\ndata_dir = {tmp_path / 'data'}\n[database]\nurl = {db_url}\n[storage]\nbackend = local\n"
    )
    return str(path)


def no_rendering(monkeypatch) -> None:
    """From here on, rendering any part of a whole-index page fails the test."""
    monkeypatch.setattr(segmented, "_put", lambda *a, **k: pytest.fail("a segment rendered by a request"))
    monkeypatch.setattr(segmented, "_build_many", lambda *a, **k: pytest.fail("a page built by a request"))
    monkeypatch.setattr(simple, "_render_index_html", lambda *a, **k: pytest.fail("rendered per request"))
    monkeypatch.setattr(simple, "_render_index_json", lambda *a, **k: pytest.fail("rendered per request"))


def rpc(testapp, method: str) -> bytes:
    return testapp.post("/RPC2", xmlrpc.client.dumps((), method).encode(), headers=XML).body


def expected_lists(db) -> dict[str, bytes]:
    with db.transaction() as tx:
        return {m: xmlrpc_lists.WRITERS[m](tx) for m in xmlrpc_lists.SHARED}


def make_private(db, name: str) -> None:
    from pypi.index import packages

    with db.transaction(write=True) as tx:
        assert access.set_visibility(tx, packages.get_project(tx, name), True)


def test_initdb_stores_every_whole_index_page_and_the_first_requests_render_nothing(
    config, db, tmp_path, monkeypatch, capsys
):
    add(db, "A&B", "less<than", "Zürich-Tool", *[f"n{i}" for i in range(8)])
    assert cli.main(["initdb", "--config", config_file(tmp_path, config.database.url)]) == 0
    for spec in whole_index.SPECS:
        assert segments(db, spec.page), spec.page
    assert whole_index.stored(db)
    lists = expected_lists(db)
    html = full_html(db)
    with db.transaction() as tx:
        json_index = b"".join(simple._render_index_json(tx, int(tx.scalar(segmented.SERIAL_SQL))))
    no_rendering(monkeypatch)
    testapp = webtest.TestApp(make_app(config, db=Database(config.database.url)))  # a fresh process
    for method, body in lists.items():
        assert rpc(testapp, method) == body, method
    assert testapp.get("/simple/").body == html
    assert testapp.get("/simple/", headers={"Accept": JSON}).body == json_index


def test_the_public_pages_are_the_copies_without_the_private_projects(config, db, tmp_path, monkeypatch):
    add(db, *[f"n{i:02d}" for i in range(10)], "Secret.One", "secret-two")
    make_private(db, "Secret.One")
    make_private(db, "secret-two")
    segmented.prepare(db, whole_index.SPECS)
    hidden = access.Visibility(frozenset({"secret-one", "secret-two"}), hides_all_private=True)
    everything = segments(db, simple.SPECS["html", False].page)
    public = segments(db, simple.SPECS["html", True].page)
    changed = {lo for lo in public if public[lo] != everything.get(lo)}
    assert changed and len(changed) < len(everything)  # copies but the segment holding the secrets
    html = full_html(db, hidden)
    no_rendering(monkeypatch)
    testapp = webtest.TestApp(make_app(config, db=db))  # anonymous: sees the public projects
    assert testapp.get("/simple/").body == html
    listing = xmlrpc.client.loads(rpc(testapp, "list_packages"))[0][0]
    assert listing == [f"n{i:02d}" for i in range(10)]
    with_serial = xmlrpc.client.loads(rpc(testapp, "list_packages_with_serial"))[0][0]
    assert sorted(with_serial) == listing


def test_serve_stores_the_pages_before_its_workers_start(config, db, tmp_path, monkeypatch):
    import argparse

    add(db, *[f"n{i}" for i in range(7)])
    seen = []

    class NoServer:
        def __init__(self, settings, build):
            pass

        def run(self):  # where gunicorn would start the workers
            seen.append(whole_index.stored(db))

    monkeypatch.setattr(serve_command, "Server", NoServer)
    args = argparse.Namespace(
        config=config_file(tmp_path, config.database.url), host="127.0.0.1", port=0, threads=None, workers=1
    )
    assert serve_command.serve(args) == 0
    assert seen == [True]
    for spec in whole_index.SPECS:
        assert segments(db, spec.page), spec.page


def test_a_request_while_another_process_builds_is_answered_from_the_database(
    db_url, config, db, monkeypatch
):
    if not db_url.startswith("postgresql"):
        pytest.skip("the build's lock is PostgreSQL's advisory lock")
    add(db, "A&B", *[f"n{i}" for i in range(8)])
    monkeypatch.setattr(segmented, "LOCK_WAIT", 0.2)
    lists, html = expected_lists(db), full_html(db)
    builder = Database(config.database.url)  # "another process", holding every page's lock
    locked, release = threading.Event(), threading.Event()

    def build_slowly():
        with builder.transaction(write=True) as tx:
            for spec in whole_index.SPECS:
                tx.execute("SELECT pg_advisory_xact_lock(?)", (segmented._lock_id(spec.page),))
            locked.set()
            release.wait(30)

    thread = threading.Thread(target=build_slowly)
    thread.start()
    try:
        assert locked.wait(10)
        testapp = webtest.TestApp(make_app(config, db=db))
        assert testapp.get("/simple/").body == html
        for method, body in lists.items():
            assert rpc(testapp, method) == body, method
        assert not segments(db)  # nothing stored by these requests: the build is the other's
    finally:
        release.set()
        thread.join(10)
        builder.close()
    assert testapp.get("/simple/").body == html  # the lock free: stored, then served from it
    assert segments(db)


def test_plain_gunicorn_with_the_shipped_config_stores_them_in_the_master(config, db, tmp_path, monkeypatch):
    import importlib
    import sys

    from pypi import config as config_mod

    add(db, *[f"n{i}" for i in range(5)])
    monkeypatch.setenv(config_mod.ENV_CONFIG, config_file(tmp_path, config.database.url))
    monkeypatch.delitem(sys.modules, "pypi.server.gunicorn_conf", raising=False)
    conf = importlib.import_module("pypi.server.gunicorn_conf")
    assert not whole_index.stored(db)
    conf.on_starting(None)  # gunicorn's hook in the master, before it forks the workers
    assert whole_index.stored(db)
