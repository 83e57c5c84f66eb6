"""A file row never points to a missing object: lost COMMIT acknowledgements and
constraint errors during an upload, on SQLite and PostgreSQL."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import webtest

from pypi.app import make_app
from pypi.index import packages
from pypi.index.db import Database, DatabaseError, IntegrityError
from tests.dists import make_wheel
from tests.uploading import upload


class LostAck(Database):
    """A real database whose next write transaction commits, then reports a lost connection.

    ``down_after`` more transactions then fail at once (the database is unreachable for a
    moment), as after a network cut between the server and the database.
    """

    def __init__(self, url: str, *, down_after: int = 0) -> None:
        super().__init__(url)
        self.armed = True
        self.down_after = down_after
        self.down = 0

    @contextmanager
    def transaction(self, *, write=False):
        if self.down:
            self.down -= 1
            raise DatabaseError("cannot connect: connection refused (test)")
        with super().transaction(write=write) as tx:
            yield tx
        if write and self.armed:
            self.armed = False
            self.down = self.down_after
            raise DatabaseError("commit failed: server closed the connection unexpectedly (test)")


@pytest.fixture
def wheel(tmp_path):
    return make_wheel(str(tmp_path), "Demo.Pkg", "1.0")


def stored(app) -> list[str]:
    return sorted(info.path for info in app.services.storage.list())


def file_paths(db) -> list[str]:
    with db.transaction() as tx:
        return [r["path"] for r in tx.all("SELECT path FROM files")]


def test_lost_commit_ack_with_the_database_unreachable_keeps_the_object(config, db, users, wheel):
    """The row committed but the server cannot tell: the object stays, the answer says so."""
    lossy = LostAck(config.database.url, down_after=1)
    app = make_app(config, db=lossy)
    r = upload(webtest.TestApp(app), wheel, name="Demo.Pkg", version="1.0", status=503)
    assert "whether the upload was saved is unknown" in r.status and "nothing was stored" not in r.text
    [path] = file_paths(db)  # it did commit
    assert path in stored(app) and path + ".metadata" in stored(app)
    # The row's object is there: the file is served, and the client's retry is accepted.
    testapp = webtest.TestApp(app)
    assert testapp.get("/" + path).body == open(wheel, "rb").read()
    upload(testapp, wheel, name="Demo.Pkg", version="1.0")
    lossy.close()


def test_lost_commit_ack_is_a_success_when_the_row_is_there(config, db, users, wheel):
    lossy = LostAck(config.database.url)
    app = make_app(config, db=lossy)
    testapp = webtest.TestApp(app)
    upload(testapp, wheel, name="Demo.Pkg", version="1.0", status=200)
    [path] = file_paths(db)
    assert path in stored(app)
    assert "demo_pkg-1.0-py3-none-any.whl" in testapp.get("/simple/demo-pkg/").text
    lossy.close()


def test_a_constraint_error_that_is_not_a_duplicate_filename_is_not_file_exists(
    app, testapp, db, users, wheel, monkeypatch
):
    def refused(*args, **kwargs):
        raise IntegrityError("duplicate key value violates unique constraint releases_project_id_key (test)")

    monkeypatch.setattr(packages, "create_release", refused)
    r = upload(testapp, wheel, name="Demo.Pkg", version="1.0", status=503)
    assert "File already exists" not in r.text
    assert "conflicted with a concurrent change" in r.status and "retry" in r.text
    assert stored(app) == [] and file_paths(db) == []


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_migration_0002_continues_the_serials_of_an_existing_journal(dialect, tmp_path, request, monkeypatch):
    from pypi.index import changes, journal

    url = (
        f"sqlite:///{tmp_path}/old.sqlite3"
        if dialect == "sqlite"
        else request.getfixturevalue("postgres_server").new_database()
    )
    old = Database(url)
    every = old.migrations()
    monkeypatch.setattr(Database, "migrations", lambda self: [m for m in every if m[0] == 1])
    assert old.migrate() == [1]
    with old.transaction(write=True) as tx:  # a journal written by the old code: ids from the sequence
        # Written with SQL: today's queries expect today's schema (private_projects and all).
        tx.insert(
            "INSERT INTO projects (name, normalized_name, created) VALUES (?, ?, ?)",
            ("Old.Project", "old-project", "2020-01-01T00:00:00Z"),
        )
        for action in ("create", "add Owner x", "new release"):
            tx.insert(
                "INSERT INTO journal (name, version, action, submitted_date) VALUES (?, ?, ?, ?)",
                ("Old.Project", None, action, "2020-01-01T00:00:00Z"),
            )
    monkeypatch.undo()
    assert 2 in old.migrate()
    with old.reading() as tx:
        assert journal.last_serial(tx) == 3
    with old.transaction(write=True) as tx:
        change = changes.record(tx, "old.project", "1.0", "yank release", None)
        legacy = journal.record(tx, "Old.Project", "1.0", "unyank release", None)
    assert (legacy, change.serial) == (4, 5)  # the legacy call takes its serial at once
    with old.reading() as tx:
        assert journal.last_serial(tx) == 5
        assert [r["id"] for r in journal.since(tx, 3)] == [4, 5]
        assert packages.get_project(tx, "old-project")["last_serial"] == 5
        assert tx.scalar("SELECT COUNT(*) FROM purge_outbox") == 2  # the project's key and the recent list
    old.close()
