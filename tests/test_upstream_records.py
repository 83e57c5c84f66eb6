"""records.apply_page, on SQLite and PostgreSQL: one query for the names other projects'
rows hold, the project's releases read once, each release made once for its files."""

from __future__ import annotations

from pypi.index.db import Database
from pypi.upstream import records
from pypi.upstream.client import UpstreamFile
from pypi.upstream.records import StoredFile


def _file(name: str) -> UpstreamFile:
    return UpstreamFile(filename=name, url=f"http://up/{name}", sha256="ab" * 32)


def _stored(name: str) -> StoredFile:
    return StoredFile(
        path=f"packages/aa/bb/cc/{name}", size=3, md5="m", blake2_256="b" * 64, metadata_sha256=None
    )


def test_a_page_adds_each_file_once_to_one_release_per_version(db_url):
    db = Database(db_url)
    try:
        names = ["demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz", "demo-2.0-py3-none-any.whl"]
        wanted = [_file(n) for n in names] + [_file(names[0])]  # upstream lists one twice
        with db.transaction(write=True) as tx:
            changes = records.apply_page(
                tx, "demo", records.MIRROR, wanted, {n: _stored(n) for n in names}, by="test"
            )
        assert changes.added == names
        with db.transaction() as tx:
            rows = tx.all(
                "SELECT f.filename, r.version FROM files f JOIN releases r ON r.id = f.release_id "
                "ORDER BY f.filename"
            )
            assert [(r["filename"], r["version"]) for r in rows] == [
                ("demo-1.0-py3-none-any.whl", "1.0"),
                ("demo-1.0.tar.gz", "1.0"),
                ("demo-2.0-py3-none-any.whl", "2.0"),
            ]
            assert tx.scalar("SELECT COUNT(*) FROM releases") == 2
            assert tx.scalar("SELECT COUNT(*) FROM file_registry") == 3

        # Another project's page naming a file demo has: skipped. A new file of an existing
        # release joins it (the releases read once, not made again).
        with db.transaction(write=True) as tx:
            other = records.apply_page(
                tx, "other", records.MIRROR, [_file(names[1])], {names[1]: _stored(names[1])}, by="test"
            )
            more = "demo-1.0-py2-none-any.whl"
            again = records.apply_page(
                tx,
                "demo",
                records.MIRROR,
                [*(_file(n) for n in names), _file(more)],
                {more: _stored(more)},
                by="test",
            )
        assert other.added == [] and again.added == [more]
        with db.transaction() as tx:
            assert tx.scalar("SELECT COUNT(*) FROM releases") == 2
            assert tx.scalar("SELECT COUNT(*) FROM files") == 4
    finally:
        db.close()
