"""Answers from the server's event loop (pypi.inline): the application answers a request marked
inline only from a page already rendered for the serial it reads, and refuses (NeedsThread)
whatever needs work, so an upload is visible at once and nothing slow runs in the loop."""

from __future__ import annotations

import gzip

import pytest
from webob import Request

from pypi import inline
from tests.conftest import basic
from tests.uploading import upload_wheel

INLINE = {inline.ENVIRON_KEY: True}


def test_a_rendered_page_is_answered_inline_and_an_upload_shows_at_once(testapp, users, tmp_path):
    upload_wheel(testapp, tmp_path, "demo", "1.0")
    rendered = testapp.get("/simple/demo/")  # on a thread: renders the page for this serial
    answered = testapp.get("/simple/demo/", extra_environ=INLINE)
    assert answered.body == rendered.body and "demo-1.0-py3-none-any.whl" in answered.text
    assert answered.headers["X-PyPI-Last-Serial"] == rendered.headers["X-PyPI-Last-Serial"]
    assert answered.headers["Cache-Control"] == rendered.headers["Cache-Control"]

    upload_wheel(testapp, tmp_path, "demo", "2.0")
    with pytest.raises(inline.NeedsThread):  # the page held is for the old serial: never served
        testapp.get("/simple/demo/", extra_environ=INLINE)
    assert "demo-2.0-py3-none-any.whl" in testapp.get("/simple/demo/").text
    assert "demo-2.0-py3-none-any.whl" in testapp.get("/simple/demo/", extra_environ=INLINE).text


def test_the_index_is_answered_inline_while_its_names_are_current(testapp, users, tmp_path):
    upload_wheel(testapp, tmp_path, "demo", "1.0")
    assert testapp.get("/simple/").body == testapp.get("/simple/", extra_environ=INLINE).body
    upload_wheel(testapp, tmp_path, "other", "1.0")
    with pytest.raises(inline.NeedsThread):
        testapp.get("/simple/", extra_environ=INLINE)
    assert "/simple/other/" in testapp.get("/simple/").text
    assert "/simple/other/" in testapp.get("/simple/", extra_environ=INLINE).text


@pytest.mark.parametrize("path", ["/pypi/demo/json", "/pypi/demo/1.0/json"])
def test_the_json_api_is_answered_inline_in_both_encodings_and_an_upload_shows_at_once(
    testapp, users, tmp_path, path
):
    upload_wheel(testapp, tmp_path, "demo", "1.0")
    with pytest.raises(inline.NeedsThread):  # not rendered yet: a thread renders it
        testapp.get(path, extra_environ=INLINE)
    for headers in ({}, {"Accept-Encoding": "gzip"}):  # the bytes as sent (WebTest would gunzip)
        rendered = Request.blank(path, headers=headers).get_response(testapp.app)
        answered = Request.blank(path, headers=headers, environ=dict(INLINE)).get_response(testapp.app)
        assert answered.status_int == 200 and answered.body == rendered.body
        assert answered.headerlist == rendered.headerlist  # ETag, Vary, cache headers, serial
    assert answered.headers["Content-Encoding"] == "gzip" and answered.headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(answered.body) == testapp.get(path).body

    upload_wheel(testapp, tmp_path, "demo", "2.0")
    if path == "/pypi/demo/json":
        with pytest.raises(inline.NeedsThread):  # the page held is for the old serial
            testapp.get(path, extra_environ=INLINE)
        assert testapp.get(path).json["info"]["version"] == "2.0"
        assert testapp.get(path, extra_environ=INLINE).json["info"]["version"] == "2.0"


def test_a_private_project_s_json_api_stays_private_inline(testapp, users, tmp_path, app):
    from pypi.index import access, packages

    upload_wheel(testapp, tmp_path, "demo", "1.0")
    testapp.get("/pypi/demo/json")  # rendered while public
    with app.services.db.transaction(write=True) as tx:
        access.set_visibility(tx, packages.get_project(tx, "demo"), True)
    testapp.get("/pypi/demo/json", extra_environ=INLINE, status=404)  # anonymous: as if missing
    with pytest.raises(inline.NeedsThread):  # the owner's password is checked on a thread
        testapp.get("/pypi/demo/json", headers=basic("alice"), extra_environ=INLINE)
    owner = testapp.get("/pypi/demo/json", headers=basic("alice"))
    assert owner.headers["Cache-Control"] == "private, no-store"


def test_work_is_refused_inline(testapp, users, tmp_path):
    upload_wheel(testapp, tmp_path, "demo", "1.0")
    with pytest.raises(inline.NeedsThread):  # not rendered yet
        testapp.get("/simple/demo/", extra_environ=INLINE)
    testapp.get("/simple/demo/")
    testapp.get("/pypi/demo/json")
    for url, headers in [
        ("/simple/demo/", basic("alice")),  # a password to check
        ("/pypi/demo/json", basic("alice")),
        ("/project/demo/", {}),  # a view that does not answer inline
        ("/simple", {}),
    ]:
        with pytest.raises(inline.NeedsThread):
            testapp.get(url, headers=headers, extra_environ=INLINE)
    # Answers that need no work are given: a redirect, a missing project, a 406.
    assert testapp.get("/simple/Demo/", extra_environ=INLINE, status=301).location.endswith("/simple/demo/")
    testapp.get("/simple/missing/", extra_environ=INLINE, status=404)
    testapp.get("/simple/demo/", headers={"Accept": "image/png"}, extra_environ=INLINE, status=406)


def test_a_database_on_this_host_offers_inline_answers(app):
    assert app.services.db.local  # SQLite, and the tests' PostgreSQL on 127.0.0.1
    assert app.answers_inline is True


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("sqlite:///tmp/db.sqlite3", True),
        ("postgresql://postgres@127.0.0.1:5432/pypi", True),
        ("postgresql://postgres@localhost/pypi", True),
        ("postgresql://postgres@[::1]:5432/pypi", True),
        ("postgresql:///pypi", True),  # libpq's default: the Unix socket
        ("postgresql:///pypi?host=/var/run/postgresql", True),
        ("postgresql://postgres@db.internal:5432/pypi", False),
        ("postgresql://postgres@10.0.0.5/pypi", False),
        ("postgresql://postgres@127.0.0.1/pypi?host=db.internal", False),
    ],
)
def test_only_a_database_on_this_host_is_local(url, local):
    from pypi.index.db import Database

    assert Database(url).local is local


def test_inline_answers_can_be_turned_off(tmp_path, db_url):
    from pypi.app import make_app
    from pypi.config import ConfigError
    from pypi.index.db import Database
    from tests.conftest import make_config

    config = make_config(tmp_path, db_url, server={"inline_answers": "false"})
    assert config.server.inline_answers is False
    db = Database(config.database.url)
    try:
        assert make_app(config, db=db).answers_inline is False
    finally:
        db.close()
    with pytest.raises(ConfigError, match=r"\[server\] inline_answers"):
        make_config(tmp_path, db_url, server={"inline_answers": "sometimes"})
