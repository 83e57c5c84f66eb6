"""Large project pages (the JSON API, PEP 691 JSON, HTML) as served, in both encodings, are
byte for byte a fresh render, from the process that rendered them and from one that reads the
deployment's stored copy; the project lookup every request makes is prepared once per
PostgreSQL connection, and runs unprepared where the session does not last."""

from __future__ import annotations

import gzip

import pytest
from webob import Request

from pypi.app import make_app
from pypi.index import packages, shared_pages
from pypi.index.db import Database
from pypi.views import json_api, simple
from tests.dists import make_wheel
from tests.uploading import upload

JSON = "application/vnd.pypi.simple.v1+json"


def raw(app, path: str, headers: dict[str, str]):
    return Request.blank(path, headers=headers).get_response(app)


@pytest.fixture
def big(testapp, db, users, tmp_path, monkeypatch):
    """``Big`` with 12 files in 4 releases, its pages stored for every process (small bound)."""
    monkeypatch.setattr(shared_pages, "STORE_MIN_BYTES", 100)
    for version in ("1.0", "1.1", "2.0", "2.1"):
        for tag in ("py2-none-any", "py3-none-any", "py39-none-any"):
            wheel = make_wheel(str(tmp_path), "Big", version, tag=tag)
            upload(testapp, wheel, name="Big", version=version)
    return testapp


def fresh(app, db, path: str, accept: str) -> bytes:
    """The page rendered now, from the database, as the views render it."""
    svc = app.services
    with db.transaction() as tx:
        project = packages.get_project(tx, "big")
        urls = svc.urls
        if path.startswith("/pypi/"):
            return json_api._render(svc, tx, project, None, urls)
        files = packages.project_files(tx, project["id"])
        releases = packages.releases(tx, project["id"])
        return simple._render_project(urls, project, files, releases, "json" if accept == JSON else "html")


@pytest.mark.parametrize(
    ("path", "accept"),
    [("/pypi/big/json", "*/*"), ("/simple/big/", JSON), ("/simple/big/", "text/html")],
)
def test_large_pages_are_a_fresh_render_in_both_encodings_in_every_process(
    big, app, db, config, path, accept
):
    expected = fresh(app, db, path, accept)
    assert len(expected) > shared_pages.STORE_MIN_BYTES
    for process in (
        app,
        make_app(config, db=Database(config.database.url)),
    ):  # the second reads the stored copy
        plain = raw(process, path, {"Accept": accept})
        packed = raw(process, path, {"Accept": accept, "Accept-Encoding": "gzip"})
        assert plain.status_int == packed.status_int == 200
        assert plain.body == expected and "Content-Encoding" not in plain.headers
        assert packed.headers["Content-Encoding"] == "gzip" and gzip.decompress(packed.body) == expected
        assert int(packed.headers["Content-Length"]) == len(packed.body)
        assert int(plain.headers["Content-Length"]) == len(expected)


def test_the_project_lookup_is_prepared_once_per_connection(db_url, db, big):
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's prepared statements")
    with db.reading() as tx:
        first = dict(packages.get_project(tx, "Big"))
        again = dict(packages.get_project(tx, "BIG"))
        statements = tx.all("SELECT name, statement FROM pg_prepared_statements")
        assert tx.conn.prepared  # this session's
    assert first == again and first["normalized_name"] == "big" and first["private"] is False
    assert [r["name"] for r in statements] == list(tx.conn.prepared.values())
    assert "FROM projects WHERE normalized_name = $1" in statements[0]["statement"]
    with db.transaction() as tx:  # inside a transaction: as before, unprepared
        assert dict(packages.get_project(tx, "big")) == first
    with db.reading() as tx:
        assert packages.get_project(tx, "no-such-project") is None


def test_a_session_that_lost_its_statements_looks_up_unprepared(db_url, db, big):
    """As behind a pooler in transaction mode: the next statement may run in another session."""
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's prepared statements")
    with db.reading() as tx:
        expected = dict(packages.get_project(tx, "big"))
        tx.execute("DEALLOCATE ALL")  # the session's statements gone, the connection's map kept
        assert dict(packages.get_project(tx, "big")) == expected
        assert tx.conn.prepared is None  # never again on this connection
        assert dict(packages.get_project(tx, "big")) == expected


def test_a_lookup_whose_columns_a_migration_changed_runs_unprepared(db_url, db):
    """A prepared plan whose result type changed under it ("cached plan must not change result
    type") falls back to the statement itself, on that connection for good."""
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's prepared statements")
    sql = "SELECT * FROM lookup_probe WHERE id = ?"
    with db.transaction(write=True) as tx:
        tx.execute("CREATE TABLE lookup_probe (id integer PRIMARY KEY, label text)")
        tx.execute("INSERT INTO lookup_probe VALUES (1, 'one')")
    with db.reading() as tx:
        assert dict(tx.lookup(sql, (1,))) == {"id": 1, "label": "one"}
        conn = tx.conn
    with db.transaction(write=True) as tx:
        tx.execute("ALTER TABLE lookup_probe ADD COLUMN extra text DEFAULT 'x'")
    with db.reading() as tx:
        assert tx.conn is conn  # the same session, with the old plan prepared
        assert dict(tx.lookup(sql, (1,))) == {"id": 1, "label": "one", "extra": "x"}
        assert tx.conn.prepared is None
