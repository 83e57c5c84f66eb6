"""``cloudpypi fsck``: each kind of problem, on local storage and on S3 (moto's server)."""

from __future__ import annotations

import io
import re
import threading
import tracemalloc
from dataclasses import dataclass

import pytest
import webtest

import storage
from pypi.app import make_app
from pypi.cli import main
from pypi.index import objects
from pypi.index.db import Database
from tests.backends import s3_moto_section
from tests.conftest import make_config
from tests.dists import make_sdist, make_wheel
from tests.services.live_server import write_config
from tests.uploading import upload

ORPHAN = "packages/0f/0f/0f0f/stray-1.0-py3-none-any.whl"


@dataclass
class Index:
    ini: str
    db: Database
    store: storage.Storage
    wheel: objects.StoredObject
    metadata: objects.StoredObject
    sdist: objects.StoredObject

    def fsck(self, *args: str) -> int:
        return main(["fsck", "--config", self.ini, *args])


@pytest.fixture(params=["local", "s3-moto"])
def index(request, tmp_path, db_url, db, users):
    """An index (on local disk or S3) holding one wheel (with .metadata) and one sdist."""
    section = {"backend": "local"}
    if request.param == "s3-moto":
        section = s3_moto_section(
            request.getfixturevalue("moto_s3"), request.getfixturevalue("moto_s3_bucket")
        )
    config = make_config(tmp_path, db_url, storage=section)
    app = make_app(config, db=db)
    testapp = webtest.TestApp(app)
    upload(testapp, make_wheel(str(tmp_path), "checked", "1.0"), name="checked", version="1.0")
    upload(testapp, make_sdist(str(tmp_path), "checked", "1.0"), name="checked", version="1.0")
    ini = write_config(
        str(tmp_path / "config.ini"),
        {"server": {"data_dir": str(tmp_path / "data")}, "database": {"url": db_url}, "storage": section},
    )
    with db.transaction() as tx:
        wanted = list(objects.referenced(tx))
    wheel = next(o for o in wanted if o.filename.endswith(".whl") and not o.is_metadata)
    metadata = next(o for o in wanted if o.is_metadata)
    sdist = next(o for o in wanted if o.filename.endswith(".tar.gz"))
    yield Index(ini, db, app.services.storage, wheel, metadata, sdist)
    app.services.storage.close()


def lines(out: str, kind: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(kind + " ")]


def test_a_clean_index_passes(index, capsys):
    assert index.fsck() == 0
    out = capsys.readouterr().out
    assert "3 referenced objects, 3 stored objects" in out and "; clean" in out
    assert index.fsck("--verify-hashes") == 0


def test_missing_file_and_missing_metadata(index, capsys):
    index.store.delete(index.sdist.path)
    index.store.delete(index.metadata.path)
    assert index.fsck() == 1
    out = capsys.readouterr().out
    missing = lines(out, "missing")
    assert len(missing) == 2
    assert any(index.sdist.path in m and f"{index.sdist.filename} is not stored" in m for m in missing)
    assert any(index.metadata.path in m and "the METADATA of" in m for m in missing)
    assert "2 missing" in out


def test_orphans_are_found_and_repair_removes_only_them(index, capsys):
    index.store.put(ORPHAN, io.BytesIO(b"nobody's"))
    # A .metadata next to an sdist: no row has metadata for it.
    index.store.put(index.sdist.path + ".metadata", io.BytesIO(b"Name: x\n"))
    # A referenced object with the wrong size: a problem, but never repaired.
    index.store.put(index.wheel.path, io.BytesIO(b"short"))

    assert index.fsck() == 1
    out = capsys.readouterr().out
    orphans = lines(out, "orphan")
    assert {line.split()[1].rstrip(":") for line in orphans} == {ORPHAN, index.sdist.path + ".metadata"}
    [size] = lines(out, "size")
    assert index.wheel.path in size and f"database says {index.wheel.size}" in size

    # Fresh orphans are kept by default: an upload may be about to commit them.
    assert index.fsck("--repair") == 1
    assert "kept: stored" in capsys.readouterr().out
    assert index.store.exists(ORPHAN)

    assert index.fsck("--repair", "--min-age", "0") == 1  # the size mismatch remains
    out = capsys.readouterr().out
    assert "2 orphans removed" in out
    assert not index.store.exists(ORPHAN)
    assert not index.store.exists(index.sdist.path + ".metadata")
    assert index.store.exists(index.wheel.path) and index.store.exists(index.metadata.path)
    assert index.store.exists(index.sdist.path)
    assert index.fsck() == 1
    out = capsys.readouterr().out
    assert not lines(out, "orphan") and len(lines(out, "size")) == 1


def test_verify_hashes_finds_changed_content_of_the_same_size(index, capsys):
    with index.store.open(index.sdist.path) as f:
        good = f.read()
    index.store.put(index.sdist.path, io.BytesIO(bytes([good[0] ^ 1]) + good[1:]))
    index.store.put(index.metadata.path, io.BytesIO(b"Name: changed\n"))
    assert index.fsck() == 0  # sizes match and .metadata has no recorded size
    capsys.readouterr()
    assert index.fsck("--verify-hashes", "--jobs", "2") == 1
    out = capsys.readouterr().out
    mismatches = lines(out, "sha256")
    assert len(mismatches) == 2
    assert any(index.sdist.path in m and index.sdist.sha256 in m for m in mismatches)
    assert any(index.metadata.path + ":" in m for m in mismatches)
    assert re.search(r"2 sha256 mismatches", out)
    # Repair never rewrites or removes a referenced object.
    assert index.fsck("--verify-hashes", "--repair", "--min-age", "0") == 1
    assert index.store.exists(index.sdist.path) and index.store.exists(index.metadata.path)


def test_a_row_committed_while_fsck_runs_is_not_an_orphan(index, monkeypatch):
    """The object is listed, the database is read, and only then does the upload's row commit."""
    from pypi.operations import fsck as fsck_mod

    index.store.put(index.sdist.path + ".metadata", io.BytesIO(b"Name: checked\n"))

    def referenced_then_commit(db, **kwargs):
        with db.transaction() as tx:
            snapshot = list(objects.referenced(tx))

        def commit():  # another thread: another connection, as another process would be
            with index.db.transaction(write=True) as other:
                other.execute("UPDATE files SET metadata_sha256 = 'x' WHERE path = ?", (index.sdist.path,))

        worker = threading.Thread(target=commit)
        worker.start()
        worker.join()
        return iter(snapshot)

    monkeypatch.setattr(fsck_mod, "referenced_objects", referenced_then_commit)
    report = fsck_mod.check(index.db, index.store, repair=True, min_age=0)
    assert not report.of_kind("orphan") and not report.removed
    assert index.store.exists(index.sdist.path + ".metadata")


# -- what changes while fsck runs, and fsck at pypi.org's size --------------------------------


class LiveListing:
    """A store whose listing is read one entry at a time, each from a fresh listing: what is
    stored or deleted while fsck walks it shows (or not) as it would in a paged S3 listing."""

    def __init__(self, store: storage.Storage, before_listing=None) -> None:
        self.store = store
        self.before_listing = before_listing

    def __getattr__(self, name):
        return getattr(self.store, name)

    def list(self, prefix=""):
        last = None
        while True:
            later = [i for i in self.store.list(prefix) if last is None or i.path > last]
            entry = min(later, key=lambda i: i.path, default=None)
            if entry is None:
                return
            last = entry.path
            yield entry


def test_an_upload_committed_while_fsck_runs_is_not_reported_missing(db, users, testapp, app, tmp_path):
    """Listed before the upload stored its objects, its row read after it committed."""
    from pypi.operations import fsck as fsck_mod

    upload(testapp, make_wheel(str(tmp_path), "early", "1.0"), name="early", version="1.0")
    store = app.services.storage

    class ListsThenUploads(LiveListing):
        def list(self, prefix=""):
            listed = list(self.store.list(prefix))  # the listing is taken ...
            upload(testapp, make_wheel(str(tmp_path), "late", "1.0"), name="late", version="1.0")
            return iter(listed)  # ... and the upload stored and committed after it

    found: list[fsck_mod.Problem] = []
    # stat_first=0: no object is looked at again unless the serials say it may have changed.
    report = fsck_mod.check(db, ListsThenUploads(store), stat_first=0, on_problem=found.append)
    assert found == [] and report.clean, report.summary()
    assert (report.referenced, report.stored) == (4, 2)  # 2 wheels and their .metadata; 2 listed

    # The same stale listing when nothing was committed during the run: reported (it is missing
    # from the listing, and the serial says no row changed since fsck started).
    class StaleListing(LiveListing):
        def list(self, prefix=""):
            return iter([i for i in self.store.list(prefix) if "/early-" in i.path])

    report = fsck_mod.check(db, StaleListing(store), stat_first=0)
    assert report.count(fsck_mod.MISSING) == 2 and {p.filename for p in report.problems} == {
        "late-1.0-py3-none-any.whl"
    }


def test_a_file_removed_while_fsck_runs_is_not_reported_missing(
    db, users, testapp, app, tmp_path, monkeypatch
):  # noqa: E501
    """Its row read before the removal committed, its objects deleted before the listing got there."""
    from pypi.index import stream
    from pypi.operations import fsck as fsck_mod
    from pypi.operations import removal

    for name in ("one", "two"):
        upload(testapp, make_wheel(str(tmp_path), name, "1.0"), name=name, version="1.0")
    store = app.services.storage
    with db.transaction() as tx:
        rows = tx.all("SELECT filename, path FROM files ORDER BY path")
    last = rows[-1]  # listed after the other: still to come when the removal happens

    def read_then_remove(db_, **kwargs):
        read = list(stream.referenced_objects(db_, **kwargs))
        removal.delete_file(db, store, last["filename"])  # commit, then delete the objects
        return iter(read)

    monkeypatch.setattr(fsck_mod, "referenced_objects", read_then_remove)
    found: list[fsck_mod.Problem] = []
    report = fsck_mod.check(db, LiveListing(store), on_problem=found.append)
    assert found == [] and report.clean, report.summary()
    assert (report.referenced, report.stored) == (4, 2)


def test_fsck_of_200k_missing_objects_hands_each_out_and_keeps_the_first_thousand(tmp_path):
    from pypi.index import packages
    from pypi.operations import fsck as fsck_mod

    db = Database(f"sqlite:///{tmp_path}/big.sqlite3")
    db.migrate()
    n = 200_000
    with db.transaction(write=True) as tx:
        project = packages.create_project(tx, "big")
        release = packages.create_release(tx, project["id"], "1.0", {})
        tx.conn.executemany(
            "INSERT INTO files (release_id, filename, path, size, md5_digest, sha256_digest, "
            "blake2_256_digest, packagetype, upload_time) VALUES (?, ?, ?, ?, '', ?, ?, 'bdist_wheel', '')",
            (
                (release["id"], f"big-{i}.whl", f"packages/{h}/big-{i}.whl", 100, h, h)
                for i, h in ((i, f"{i:064x}") for i in range(n))
            ),
        )
    store = storage.from_config({"backend": "local", "path": str(tmp_path / "empty")}, data_dir=str(tmp_path))
    handed = 0

    def count(problem: fsck_mod.Problem) -> None:
        nonlocal handed
        handed += 1

    tracemalloc.start()
    try:
        report = fsck_mod.check(db, store, on_problem=count)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        db.close()
    assert handed == report.count(fsck_mod.MISSING) == report.referenced == n
    assert len(report.problems) == fsck_mod.PROBLEMS_KEPT and report.unresolved == n
    assert f"{n} missing" in report.summary() and not report.clean
    # Holding every problem (as the report did) takes well over 100 MB here.
    assert peak < 30 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
