"""Yanking and deleting: journal, purges, pages, storage objects, and a delete the storage refuses."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
import webtest

from pypi.app import make_app
from pypi.cli import main
from pypi.index.db import Database, DatabaseError
from pypi.operations import fsck, removal
from storage.s3 import S3Storage
from tests.backends import FailingDeletes, s3_moto_section
from tests.conftest import make_config
from tests.dists import make_sdist, make_wheel
from tests.services.live_server import write_config
from tests.services.moto_s3 import MotoServer
from tests.uploading import upload

JSON = "application/vnd.pypi.simple.v1+json"


@pytest.fixture
def published(testapp, app, users, tmp_path):
    """Gone.Pkg 1.0 (wheel + sdist) and 2.0 (wheel), and Other 1.0 (wheel)."""
    paths = {}
    for name, version in (("Gone.Pkg", "1.0"), ("Gone.Pkg", "2.0"), ("Other", "1.0")):
        paths[(name, version)] = make_wheel(str(tmp_path), name, version)
        upload(testapp, paths[(name, version)], name=name, version=version)
    paths["sdist"] = make_sdist(str(tmp_path), "Gone.Pkg", "1.0")
    upload(testapp, paths["sdist"], name="Gone.Pkg", version="1.0")
    return paths


@pytest.fixture
def ini(tmp_path, db_url, config):
    return write_config(
        str(tmp_path / "config.ini"),
        {
            "server": {"data_dir": config.data_dir},
            "database": {"url": db_url},
            "storage": {"backend": "local"},
        },
    )


def file_rows(db, project="gone-pkg"):
    with db.transaction() as tx:
        return tx.all(
            "SELECT f.filename, f.path, f.metadata_sha256, r.version FROM files f "
            "JOIN releases r ON r.id = f.release_id JOIN projects p ON p.id = r.project_id "
            "WHERE p.normalized_name = ? ORDER BY f.filename",
            (project,),
        )


def journal_actions(db):
    with db.transaction() as tx:
        return [(r["name"], r["version"], r["action"]) for r in tx.all("SELECT * FROM journal ORDER BY id")]


def purge_keys(db):
    with db.transaction() as tx:
        return [r["purge_key"] for r in tx.all("SELECT purge_key FROM purge_outbox ORDER BY id")]


def counts(db):
    with db.transaction() as tx:
        tables = ("files", "releases", "projects", "journal", "purge_outbox", "file_registry")
        return {t: tx.scalar(f"SELECT COUNT(*) FROM {t}") for t in tables}


def stored_paths(store):
    return {info.path for info in store.list("packages/")}


def test_yank_shows_in_simple_and_json_and_unyank_clears_it(testapp, db, published, ini, capsys):
    before = testapp.get("/simple/gone-pkg/")  # renders and caches the page
    assert "data-yanked" not in before.text
    keys_before = len(purge_keys(db))

    assert main(["yank", "gone.pkg", "1.0", "--reason", "broken <build>", "--config", ini]) == 0
    assert "yanked gone.pkg 1.0" in capsys.readouterr().out
    page = testapp.get("/simple/gone-pkg/")
    assert int(page.headers["X-PyPI-Last-Serial"]) > int(before.headers["X-PyPI-Last-Serial"])
    yanked = [line for line in page.text.splitlines() if "data-yanked" in line]
    assert len(yanked) == 2 and all('data-yanked="broken &lt;build&gt;"' in line for line in yanked)
    assert all("-1.0" in line for line in yanked)
    files = testapp.get("/simple/gone-pkg/", headers={"Accept": JSON}).json["files"]
    assert {f["filename"]: f["yanked"] for f in files} == {
        "gone_pkg-1.0-py3-none-any.whl": "broken <build>",
        "gone_pkg-1.0.tar.gz": "broken <build>",
        "gone_pkg-2.0-py3-none-any.whl": False,
    }
    assert testapp.get("/pypi/gone-pkg/1.0/json").json["info"]["yanked"] is True
    assert journal_actions(db)[-1] == ("Gone.Pkg", "1.0", "yank release")
    assert purge_keys(db)[keys_before:] == ["project/gone-pkg", "recent"]

    assert main(["unyank", "Gone.Pkg", "1.0", "--config", ini]) == 0
    assert "data-yanked" not in testapp.get("/simple/gone-pkg/").text
    assert journal_actions(db)[-1] == ("Gone.Pkg", "1.0", "unyank release")


def test_yank_of_a_missing_release_fails(db, published, ini, capsys):
    assert main(["yank", "gone.pkg", "9.9", "--config", ini]) == 1
    assert "has no release '9.9'" in capsys.readouterr().err
    assert main(["unyank", "nothing", "1.0", "--config", ini]) == 1
    assert "no project named 'nothing'" in capsys.readouterr().err


def test_delete_file_removes_row_and_objects_and_the_name_stays_taken(testapp, app, db, published):
    store = app.services.storage
    wheel = next(r for r in file_rows(db) if r["filename"] == "gone_pkg-2.0-py3-none-any.whl")
    assert wheel["metadata_sha256"]
    assert {wheel["path"], wheel["path"] + ".metadata"} <= stored_paths(store)
    testapp.get("/simple/gone-pkg/")

    result = removal.delete_file(db, store, wheel["filename"])
    assert result.files == [wheel["filename"]]
    assert not store.exists(wheel["path"]) and not store.exists(wheel["path"] + ".metadata")
    assert wheel["filename"] not in [r["filename"] for r in file_rows(db)]
    assert wheel["filename"] not in testapp.get("/simple/gone-pkg/").text
    testapp.get("/packages/" + wheel["path"][len("packages/") :], status=404)
    assert journal_actions(db)[-1] == ("Gone.Pkg", "2.0", f"remove file {wheel['filename']}")
    assert purge_keys(db)[-2:] == ["project/gone-pkg", "recent"]
    # The release stays (now empty); the filename can never be used again.
    assert testapp.get("/pypi/gone-pkg/2.0/json").json["urls"] == []
    r = upload(testapp, published[("Gone.Pkg", "2.0")], name="Gone.Pkg", version="2.0", status=400)
    assert "filename has already been used" in r.text


def test_delete_release_removes_its_files_only(testapp, app, db, published, ini, capsys):
    store = app.services.storage
    doomed = [r for r in file_rows(db) if r["version"] == "1.0"]
    kept = [r for r in file_rows(db) if r["version"] == "2.0"]
    assert len(doomed) == 2

    assert main(["remove", "Gone.Pkg", "1.0", "--yes", "--config", ini]) == 0
    out = capsys.readouterr().out
    assert "removed release Gone.Pkg 1.0 and its 2 files" in out
    for row in doomed:
        assert f"removed file {row['filename']}" in out
        assert not store.exists(row["path"])
    assert not any(store.exists(row["path"] + ".metadata") for row in doomed)
    assert [r["filename"] for r in file_rows(db)] == [r["filename"] for r in kept]
    assert all(store.exists(r["path"]) for r in kept)
    testapp.get("/pypi/gone-pkg/1.0/json", status=404)
    assert "1.0" not in testapp.get("/pypi/gone-pkg/json").json["releases"]
    assert journal_actions(db)[-1] == ("Gone.Pkg", "1.0", "remove release")


def test_delete_project_removes_everything_and_purges_the_index(testapp, app, db, published, ini, capsys):
    store = app.services.storage
    assert "Gone.Pkg" in testapp.get("/simple/").text  # cached
    gone_paths = {r["path"] for r in file_rows(db)}
    other_paths = {r["path"] for r in file_rows(db, "other")}
    before = counts(db)

    assert main(["remove", "gone-pkg", "--yes", "--config", ini]) == 0
    assert "removed the whole project Gone.Pkg: 2 releases, 3 files" in capsys.readouterr().out
    assert "Gone.Pkg" not in testapp.get("/simple/").text
    assert "Other" in testapp.get("/simple/").text
    testapp.get("/simple/gone-pkg/", status=404)
    testapp.get("/pypi/gone-pkg/json", status=404)
    left = stored_paths(store)
    assert not any(p in left or p + ".metadata" in left for p in gone_paths)
    assert other_paths <= left
    after = counts(db)
    assert (after["files"], after["releases"], after["projects"]) == (1, 1, 1)
    assert after["file_registry"] == before["file_registry"] == 4
    assert journal_actions(db)[-1] == ("Gone.Pkg", None, "remove project")
    assert purge_keys(db)[-3:] == ["project/gone-pkg", "recent", "index"]
    with db.transaction() as tx:
        assert tx.scalar("SELECT COUNT(*) FROM roles") == 1  # Other's owner only


def test_remove_asks_for_confirmation(db, published, ini, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    before = counts(db)
    assert main(["remove", "gone-pkg", "--config", ini]) == 1
    assert "add --yes to confirm" in capsys.readouterr().err
    assert counts(db) == before


def test_remove_file_checks_it_belongs_to_the_project(db, published, ini, capsys):
    before = counts(db)
    assert main(["remove", "other", "--file", "gone_pkg-2.0-py3-none-any.whl", "--yes", "--config", ini]) == 1
    assert "is not a file of project 'other'" in capsys.readouterr().err
    assert (
        main(
            ["remove", "gone-pkg", "1.0", "--file", "gone_pkg-2.0-py3-none-any.whl", "--yes", "--config", ini]
        )
        == 1
    )
    assert "is not a file of version 1.0" in capsys.readouterr().err
    assert counts(db) == before
    wheel = "gone_pkg-2.0-py3-none-any.whl"
    assert main(["remove", "gone-pkg", "--file", wheel, "--yes", "--config", ini]) == 0
    assert counts(db)["files"] == before["files"] - 1


class CommitFails(Database):
    """A real database whose write transactions run their statements, then fail to commit."""

    @contextmanager
    def transaction(self, *, write=False):
        with super().transaction(write=write) as tx:
            yield tx
            if write:
                raise DatabaseError("commit failed: connection lost (test)")


def test_a_delete_whose_commit_fails_keeps_row_and_objects(testapp, app, db, published):
    """Objects go only after the commit: a failed commit leaves the file whole and served."""
    store = app.services.storage
    before = counts(db)
    wheel = next(r for r in file_rows(db) if r["filename"] == "gone_pkg-2.0-py3-none-any.whl")
    broken = CommitFails(db.url)
    try:
        for remove in (
            lambda: removal.delete_file(broken, store, wheel["filename"]),
            lambda: removal.delete_release(broken, store, "gone-pkg", "2.0"),
            lambda: removal.delete_project(broken, store, "gone-pkg"),
        ):
            with pytest.raises(DatabaseError):
                remove()
            assert counts(db) == before
            assert store.exists(wheel["path"]) and store.exists(wheel["path"] + ".metadata")
    finally:
        broken.close()
    assert (
        testapp.get(f"/packages/{wheel['path'][len('packages/') :]}").body
        == open(published[("Gone.Pkg", "2.0")], "rb").read()
    )


def test_a_delete_the_storage_refuses_leaves_an_orphan_for_fsck(testapp, app, db, published, ini, capsys):
    """The row goes (committed first); the object the store refused is an orphan fsck --repair removes."""
    store = FailingDeletes(app.services.storage)
    before = counts(db)
    wheel = next(r for r in file_rows(db) if r["filename"] == "gone_pkg-2.0-py3-none-any.whl")

    removed = removal.delete_file(db, store, wheel["filename"])
    assert removed.files == [wheel["filename"]]
    assert [x.split(":")[0] for x in removed.leftovers] == [wheel["path"] + ".metadata", wheel["path"]]
    assert counts(db)["files"] == before["files"] - 1
    assert store.inner.exists(wheel["path"])  # an orphan, never a row without its object
    assert wheel["filename"] not in testapp.get("/simple/gone-pkg/").text

    report = fsck.check(db, store.inner, repair=True, min_age=0)
    assert {p.path for p in report.of_kind(fsck.ORPHAN)} == {wheel["path"], wheel["path"] + ".metadata"}
    assert set(report.removed) == {wheel["path"], wheel["path"] + ".metadata"} and report.clean
    assert not store.inner.exists(wheel["path"])


def test_remove_reports_objects_left_behind(app, db, published, ini, capsys, monkeypatch):
    failing = FailingDeletes(app.services.storage)
    monkeypatch.setattr("pypi.commands.manage.open_storage", lambda config: failing)
    assert main(["remove", "other", "--yes", "--config", ini]) == 1
    err = capsys.readouterr().err
    assert "could not be deleted" in err and "fsck --repair" in err and "other-1.0" in err
    assert counts(db)["projects"] == 1  # the project is gone from the index all the same


def test_a_delete_while_moto_is_stopped_leaves_orphans_not_missing_objects(tmp_path, db, users):
    """S3 on a moto server that is then stopped: the rows go, the objects stay as orphans."""
    moto = MotoServer().start()
    try:
        moto.client().create_bucket(Bucket="doomed-bucket")
        section = s3_moto_section(moto, "doomed-bucket", max_attempts="1", connect_timeout="2")
        config = make_config(tmp_path, db.url, storage=section)
        app = make_app(config, db=db)
        testapp = webtest.TestApp(app)
        wheel = make_wheel(str(tmp_path), "s3gone", "1.0")
        upload(testapp, wheel, name="s3gone", version="1.0")
        store = app.services.storage
        assert isinstance(store, S3Storage)
        [row] = file_rows(db, "s3gone")
        assert store.exists(row["path"])
        moto.stop()

        removed = removal.delete_project(db, store, "s3gone")
        assert removed.files == [row["filename"]]
        assert len(removed.leftovers) == 2 and moto.endpoint_url in removed.leftovers[0]
        assert file_rows(db, "s3gone") == []
        store.close()
    finally:
        moto.close()


def test_outbox_paths_cover_the_project_pages(db, published, app):
    removal.yank(db, "Other", "1.0", "old")
    with db.transaction() as tx:
        row = tx.one("SELECT paths FROM purge_outbox WHERE purge_key = 'project/other' ORDER BY id DESC")
    assert "/simple/other/" in json.loads(row["paths"])
