"""Answers from the server's event loop (pypi.inline): the application answers a request marked
inline only from a page already rendered for the serial it reads, and refuses (NeedsThread)
whatever needs work, so an upload is visible at once and nothing slow runs in the loop."""

from __future__ import annotations

import pytest

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


def test_work_is_refused_inline(testapp, users, tmp_path):
    upload_wheel(testapp, tmp_path, "demo", "1.0")
    with pytest.raises(inline.NeedsThread):  # not rendered yet
        testapp.get("/simple/demo/", extra_environ=INLINE)
    testapp.get("/simple/demo/")
    for url, headers in [
        ("/simple/demo/", basic("alice")),  # a password to check
        ("/pypi/demo/json", {}),  # a view that does not answer inline
        ("/simple", {}),
    ]:
        with pytest.raises(inline.NeedsThread):
            testapp.get(url, headers=headers, extra_environ=INLINE)
    # Answers that need no work are given: a redirect, a missing project, a 406.
    assert testapp.get("/simple/Demo/", extra_environ=INLINE, status=301).location.endswith("/simple/demo/")
    testapp.get("/simple/missing/", extra_environ=INLINE, status=404)
    testapp.get("/simple/demo/", headers={"Accept": "image/png"}, extra_environ=INLINE, status=406)


def test_only_sqlite_offers_inline_answers(app):
    assert app.answers_inline is (app.services.db.dialect == "sqlite")


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
