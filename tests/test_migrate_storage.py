"""``cloudpypi migrate-storage``: local -> local, S3 on moto, S3 on Swift's s3api, native Swift."""

from __future__ import annotations

import io
import os
import re
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import storage
from pypi.cli import main
from pypi.index import objects
from pypi.index.db import Database
from pypi.operations.copy_objects import FAILURES_KEPT, Migration, Outcome, Progress
from storage.local import LocalStorage
from tests.backends import build, section_for
from tests.dists import make_sdist, make_wheel
from tests.services.live_server import write_config
from tests.uploading import upload


@dataclass
class Index:
    """An index on local storage with uploads in it, and its config.ini."""

    ini: str
    db: Database
    source: LocalStorage
    tmp: Path

    def expected(self) -> list[objects.StoredObject]:
        with self.db.transaction() as tx:
            return list(objects.referenced(tx))

    def target_ini(self, section: dict[str, str], name: str = "target.ini") -> str:
        return write_config(
            str(self.tmp / name), {"server": {"data_dir": str(self.tmp / "target-data")}, "storage": section}
        )


@pytest.fixture
def index(tmp_path, db_url, testapp, users, db) -> Index:
    """Two wheels and an sdist of one project, a wheel of another: 7 objects (3 .metadata)."""
    dists = tmp_path / "dists"
    dists.mkdir()
    for name, version in (("Alpha", "1.0"), ("Alpha", "2.0"), ("beta.pkg", "0.1")):
        upload(testapp, make_wheel(str(dists), name, version), name=name, version=version)
    upload(testapp, make_sdist(str(dists), "Alpha", "1.0"), name="Alpha", version="1.0")
    ini = write_config(
        str(tmp_path / "config.ini"),
        {
            "server": {"data_dir": str(tmp_path / "data")},
            "database": {"url": db_url},
            "storage": {"backend": "local"},
        },
    )
    return Index(ini, db, LocalStorage(root=str(tmp_path / "data" / "packages")), tmp_path)


def migrate(index: Index, target_ini: str, *args: str) -> int:
    return main(["migrate-storage", "--config", index.ini, "--to", target_ini, *args])


def counts(out: str) -> tuple[int, int, int]:
    m = re.search(r"copied (\d+), skipped (\d+), failed (\d+)", out)
    assert m, out
    return int(m[1]), int(m[2]), int(m[3])


def read(store: storage.Storage, path: str) -> bytes:
    with store.open(path) as f:
        return f.read()


@pytest.mark.parametrize("kind", ["local", "s3-moto", "s3-swift", "swift"])
def test_copies_every_object_with_its_headers_and_resumes(index, kind, store_factory, capsys):
    section, target = store_factory(kind)
    target_ini = index.target_ini(section)
    expected = index.expected()
    assert len(expected) == 7 and sum(o.is_metadata for o in expected) == 3

    assert migrate(index, target_ini) == 0
    out, err = capsys.readouterr()
    assert counts(out) == (7, 0, 0), out + err
    stored = {info.path for info in target.list("packages/")}
    assert stored == {o.path for o in expected}
    for obj in expected:
        assert read(target, obj.path) == read(index.source, obj.path)
        # The upload pipeline's content type and metadata, as the source has them.
        assert target.stat(obj.path).content_type.split(";")[0] == obj.content_type.split(";")[0]
        assert target.metadata(obj.path) == index.source.metadata(obj.path) == obj.metadata

    # Resumable: a second run copies nothing ...
    assert migrate(index, target_ini) == 0
    assert counts(capsys.readouterr().out) == (0, 7, 0)
    # ... and a third, after an object went missing, copies just that one.
    gone = expected[0].path
    target.delete(gone)
    assert migrate(index, target_ini, "--jobs", "2") == 0
    assert counts(capsys.readouterr().out) == (1, 6, 0)
    assert read(target, gone) == read(index.source, gone)


def test_verify_reads_back_and_recopies_a_damaged_object(index, store_factory, capsys):
    section, target = store_factory("s3-moto")
    target_ini = index.target_ini(section)
    assert migrate(index, target_ini) == 0
    capsys.readouterr()
    obj = next(o for o in index.expected() if not o.is_metadata)
    good = read(index.source, obj.path)
    bad = bytes(b ^ 0xFF for b in good[:10]) + good[10:]
    target.put(obj.path, io.BytesIO(bad))

    assert migrate(index, target_ini) == 0  # same size: taken as there
    assert counts(capsys.readouterr().out) == (0, 7, 0)
    assert read(target, obj.path) == bad
    assert migrate(index, target_ini, "--verify") == 0
    assert counts(capsys.readouterr().out) == (1, 6, 0)
    assert read(target, obj.path) == good


def test_a_corrupted_source_object_fails_by_name_and_is_not_copied(index, store_factory, capsys):
    section, target = store_factory("s3-moto")
    expected = index.expected()
    damaged = next(o for o in expected if not o.is_metadata)
    full = os.path.join(index.source.root, *damaged.path.split("/"))
    with open(full, "r+b") as f:  # same size, different bytes
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))
    missing = next(o for o in expected if o.is_metadata)
    index.source.delete(missing.path)

    assert migrate(index, index.target_ini(section)) == 1
    out, err = capsys.readouterr()
    assert counts(out) == (5, 0, 2)
    assert f"FAILED {damaged.filename} ({damaged.path})" in err
    assert "source object has sha256" in err and damaged.sha256 in err
    assert "after 3 attempts" in err
    assert f"{missing.filename}: {missing.path}" in err and "missing from the source storage" in err
    assert not target.exists(damaged.path)
    assert not target.exists(missing.path)
    assert len(list(target.list("packages/"))) == 5


def test_dry_run_lists_and_changes_nothing(index, store_factory, capsys, tmp_path):
    section, target = store_factory("s3-moto")
    target_ini = index.target_ini(section)
    first = index.expected()[0]
    assert migrate(index, target_ini, "--jobs", "1") == 0  # then make one object missing
    target.delete(first.path)
    capsys.readouterr()
    assert migrate(index, target_ini, "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"would copy {first.path} ({first.size} bytes)" in out
    assert out.count("would copy ") == 1
    assert "dry run: 1 of 7 objects would be copied" in out
    assert not target.exists(first.path)

    local_target = tmp_path / "never-made"
    ini = index.target_ini({"backend": "local", "path": str(local_target)}, "local.ini")
    assert migrate(index, ini, "--dry-run") == 0
    assert capsys.readouterr().out.count("would copy ") == 7
    assert not local_target.exists()


def test_jobs_8_copies_many_files(tmp_path, db_url, testapp, users, db, store_factory, capsys):
    dists = tmp_path / "dists"
    dists.mkdir()
    for i in range(16):
        upload(testapp, make_wheel(str(dists), "many", f"1.{i}"), name="many", version=f"1.{i}")
    ini = write_config(
        str(tmp_path / "config.ini"),
        {"server": {"data_dir": str(tmp_path / "data")}, "database": {"url": db_url}},
    )
    section, target = store_factory("s3-moto")
    target_ini = write_config(str(tmp_path / "t.ini"), {"storage": section})
    assert main(["migrate-storage", "--config", ini, "--to", target_ini, "--jobs", "8"]) == 0
    out, err = capsys.readouterr()
    assert counts(out) == (32, 0, 0)
    assert "with 8 jobs" in err
    assert re.search(r"migrate-storage: 32/32, copied 32", err), err  # the final progress line
    assert len(list(target.list("packages/"))) == 32


def test_bad_target_configuration_is_a_clear_error(index, tmp_path, capsys):
    assert migrate(index, str(tmp_path / "nope.ini")) == 2
    assert "--to" in capsys.readouterr().err
    no_storage = write_config(str(tmp_path / "empty.ini"), {"server": {"data_dir": "x"}})
    assert migrate(index, no_storage) == 2
    assert "no [storage] section" in capsys.readouterr().err
    bad = write_config(str(tmp_path / "bad.ini"), {"storage": {"backend": "s3"}})
    assert migrate(index, bad) == 2
    assert "[storage] bucket" in capsys.readouterr().err
    assert migrate(index, index.ini) == 1
    assert "already configured" in capsys.readouterr().err


# -- the engine, without the command line ------------------------------------------------


class FlakyPuts(LocalStorage):
    """A local store whose first ``fail`` puts raise StorageUnavailable."""

    def __init__(self, root: str, fail: int) -> None:
        super().__init__(root=root)
        self.fail = fail
        self.calls = 0

    def put(self, path, local_file, **kwargs):
        self.calls += 1
        if self.calls <= self.fail:
            raise storage.StorageUnavailable("the store is busy (test)")
        return super().put(path, local_file, **kwargs)


def test_a_failed_step_is_retried_with_backoff(index, tmp_path):
    obj = next(o for o in index.expected() if not o.is_metadata)
    slept: list[float] = []
    target = FlakyPuts(str(tmp_path / "flaky"), fail=2)
    result = Migration(index.source, target, jobs=1, sleep=slept.append).run([obj])
    assert (result.copied, result.failed, result.failures) == (1, 0, [])
    assert slept == [0.5, 1.0]

    target = FlakyPuts(str(tmp_path / "down"), fail=99)
    result = Migration(index.source, target, jobs=1, attempts=3, sleep=slept.append).run([obj])
    assert result.copied == 0
    [failure] = result.failures
    assert result.failed == 1
    assert (failure.path, failure.filename, failure.attempts) == (obj.path, obj.filename, 3)
    assert "busy" in failure.error
    assert not result.ok


def test_progress_redraws_one_line_on_a_terminal():
    out = io.StringIO()
    progress = Progress(3, out, tty=True)
    progress.interval = 0
    for outcome in (Outcome.COPIED, Outcome.SKIPPED, Outcome.FAILED):
        progress.update(outcome, 2048 if outcome is Outcome.COPIED else 0)
    progress.note("FAILED x")
    progress.finish()
    text = out.getvalue()
    assert text.count("\n") == 2  # the note, and the end of the bar
    assert "\r[" in text and "3/3, copied 1, skipped 1, failed 1, 2.0 KiB" in text


def test_target_built_from_a_section_matches_what_the_command_builds(tmp_path, request):
    # The helper the tests use builds what migrate-storage builds: storage.from_config + check.
    section = section_for("local", request, tmp_path)
    store = build(section, tmp_path)
    assert isinstance(store, LocalStorage) and os.path.isdir(store.root)


# -- at pypi.org's size: nothing held per object -------------------------------------------


def synthetic(n: int, *, size: int = 1000) -> Iterator[objects.StoredObject]:
    """``n`` objects in path order, as pypi.index.stream.referenced_objects yields them."""
    for i in range(n):
        h = f"{i:064x}"
        filename = f"pkg_{i}-1.0-py3-none-any.whl"
        yield objects.StoredObject(
            f"packages/{h[:2]}/{h[2:4]}/{h[4:]}/{filename}", filename, h, size, "application/zip"
        )


def test_a_dry_run_over_200k_objects_hands_each_out_and_keeps_none(tmp_path):
    planned = 0

    def count(obj: objects.StoredObject) -> None:
        nonlocal planned
        planned += 1

    target = LocalStorage(root=str(tmp_path / "empty"))
    migration = Migration(LocalStorage(root=str(tmp_path / "source")), target, dry_run=True, on_planned=count)
    tracemalloc.start()
    try:
        result = migration.run(synthetic(200_000), total=200_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert planned == result.planned == result.total == 200_000
    assert result.bytes == 200_000 * 1000 and result.ok
    # Holding them (as a list of planned objects did) takes more than 50 MB.
    assert peak < 5 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_failures_are_counted_and_the_first_thousand_kept(tmp_path):
    named: list[str] = []
    source = LocalStorage(root=str(tmp_path / "source"))  # empty: every object is missing from it
    result = Migration(
        source, LocalStorage(root=str(tmp_path / "t")), jobs=2, on_failure=lambda f: named.append(f.path)
    ).run(synthetic(2500), total=2500)
    assert result.failed == len(named) == 2500 and len(set(named)) == 2500
    assert len(result.failures) == FAILURES_KEPT == 1000 and not result.ok
    assert "missing from the source storage" in result.failures[0].error
    assert "failed 2500 of 2500 objects" in result.summary()


def test_the_walk_beside_the_target_listing_decides_as_one_stat_per_object_does(index, tmp_path):
    """Already there with the same size: skipped; another size: recopied; absent: copied."""
    expected = index.expected()  # path order
    files = [o for o in expected if not o.is_metadata]
    target = LocalStorage(root=str(tmp_path / "target"))
    assert Migration(index.source, target).run(expected).copied == 7
    gone, resized = files[0], files[1]
    target.delete(gone.path)
    target.put(resized.path, io.BytesIO(b"shorter"))
    metadata = next(o for o in expected if o.is_metadata)
    target.put(metadata.path, io.BytesIO(b"other size"))  # no size in the database: stat decides

    def plan(migration_objects: list[objects.StoredObject], **kwargs) -> set[str]:
        found: set[str] = set()
        Migration(index.source, target, dry_run=True, on_planned=lambda o: found.add(o.path), **kwargs).run(
            migration_objects
        )
        return found

    wanted = {gone.path, resized.path, metadata.path}
    assert plan(expected) == wanted  # the listing walked beside them
    assert plan(expected, list_prefix=None) == wanted  # one stat per object, as before the walk
    assert plan(expected[::-1]) == wanted  # out of path order: the ones behind are looked up with stat

    result = Migration(index.source, target).run(expected)
    assert (result.copied, result.skipped, result.failed) == (3, 4, 0)
    for obj in expected:
        assert read(target, obj.path) == read(index.source, obj.path)
