"""LocalStorage: where an object's content type and metadata live (its extended attribute,
else a side file), ``move_file`` renaming a file into place, and the temporaries' names."""

from __future__ import annotations

import errno
import io
import itertools
import json
import multiprocessing
import os
import signal

import pytest

import cloudpypi_base.files
import storage.local
from storage.local import LocalStorage

PATH = "packages/ab/cd/ef01/demo-1.0-py3-none-any.whl"
META = {"project": "demo", "version": "1.0", "sha256": "ab" * 32}


def files_below(root) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _dirs, names in os.walk(root) for f in names
    )


def refuse_xattrs(monkeypatch, code=errno.ENOTSUP) -> list:
    """setxattr fails with ``code``; the calls made."""
    calls = []

    def refused(*args, **kw):
        calls.append(args)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(storage.local.os, "setxattr", refused)
    return calls


def test_headers_are_the_files_attribute_and_no_side_file(tmp_path):
    store = LocalStorage(root=str(tmp_path / "s"))
    store.put(PATH, io.BytesIO(b"wheel"), content_type="application/zip", metadata=META)
    store.put(PATH + ".metadata", io.BytesIO(b"meta"), content_type="text/plain", metadata=META)
    assert files_below(store.root) == [PATH, PATH + ".metadata"]  # two objects, two files
    assert store.stat(PATH).content_type == "application/zip"
    assert store.metadata(PATH) == META
    assert store.stat(PATH + ".metadata").content_type == "text/plain"
    with store.open(PATH) as f:
        assert f.info.content_type == "application/zip"


def test_without_attributes_a_side_file_and_no_more_tries(tmp_path, monkeypatch):
    """A filesystem without user attributes: side files, and setxattr is not asked again."""
    calls = refuse_xattrs(monkeypatch)
    store = LocalStorage(root=str(tmp_path / "s"))
    store.put(PATH, io.BytesIO(b"wheel"), content_type="application/zip", metadata=META)
    store.put(PATH + ".metadata", io.BytesIO(b"meta"), content_type="text/plain", metadata=META)
    assert len(calls) == 1
    assert files_below(store.root) == [
        PATH,
        PATH + ".cloudpypi-meta",
        PATH + ".metadata",
        PATH + ".metadata.cloudpypi-meta",
    ]
    assert [i.path for i in store.list()] == [PATH, PATH + ".metadata"]
    assert store.stat(PATH).content_type == "application/zip" and store.metadata(PATH) == META
    store.delete(PATH)
    assert files_below(store.root) == [PATH + ".metadata", PATH + ".metadata.cloudpypi-meta"]


def test_headers_too_large_for_an_attribute_go_to_a_side_file(tmp_path, monkeypatch):
    refuse_xattrs(monkeypatch, errno.E2BIG)
    store = LocalStorage(root=str(tmp_path / "s"))
    store.put(PATH, io.BytesIO(b"wheel"), content_type="application/zip", metadata=META)
    assert store._xattrs  # only this object: the next one tries the attribute again
    assert PATH + ".cloudpypi-meta" in files_below(store.root)
    assert store.metadata(PATH) == META


def test_another_setxattr_error_fails_the_put_and_leaves_nothing(tmp_path, monkeypatch):
    refuse_xattrs(monkeypatch, errno.EIO)
    store = LocalStorage(root=str(tmp_path / "s"))
    with pytest.raises(storage.StorageError):
        store.put(PATH, io.BytesIO(b"wheel"), content_type="application/zip")
    assert files_below(store.root) == []


def test_an_object_stored_with_a_side_file_reads_back_and_its_replacement_drops_it(tmp_path):
    """Objects written before attributes were used (or on another filesystem) keep their
    side file; a new put of the path wins and removes it."""
    store = LocalStorage(root=str(tmp_path / "s"))
    full = os.path.join(store.root, *PATH.split("/"))
    os.makedirs(os.path.dirname(full))
    with open(full, "wb") as f:
        f.write(b"old")
    with open(full + ".cloudpypi-meta", "w") as f:
        json.dump({"content_type": "application/x-old", "metadata": {"sha256": "old"}}, f)
    assert store.stat(PATH).content_type == "application/x-old"
    assert store.metadata(PATH) == {"sha256": "old"}
    store.put(PATH, io.BytesIO(b"new"), content_type="application/zip", metadata=META)
    assert files_below(store.root) == [PATH]
    assert store.stat(PATH).content_type == "application/zip" and store.metadata(PATH) == META


@pytest.mark.parametrize("batched", [False, True])
def test_move_file_renames_the_file_into_place(tmp_path, batched):
    """Same disk: the spool file itself becomes the object (same inode, 0644), nothing copied."""
    store = LocalStorage(root=str(tmp_path / "s"))
    spool = tmp_path / "tmp" / "upstream-1-1.part"
    spool.parent.mkdir()
    spool.write_bytes(b"wheel bytes")
    os.chmod(spool, 0o600)
    inode = os.stat(spool).st_ino
    with store.batch() if batched else io.BytesIO():
        store.move_file(PATH, str(spool), content_type="application/zip", metadata=META)
    full = os.path.join(store.root, *PATH.split("/"))
    st = os.stat(full)
    assert not spool.exists() and st.st_ino == inode and st.st_mode & 0o777 == 0o644
    assert files_below(store.root) == [PATH]
    assert store.stat(PATH).content_type == "application/zip" and store.metadata(PATH) == META


def test_move_file_from_another_disk_copies_and_removes_it(tmp_path, monkeypatch):
    store = LocalStorage(root=str(tmp_path / "s"))
    spool = tmp_path / "upstream-1-2.part"
    spool.write_bytes(b"wheel bytes")
    real_replace = os.replace

    def replace(src, dst):
        if src == str(spool):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(src, dst)

    def link(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(storage.local.os, "replace", replace)
    monkeypatch.setattr(storage.local.os, "link", link)
    store.move_file(PATH, str(spool), content_type="application/zip", metadata=META)
    assert not spool.exists()
    with store.open(PATH) as f:
        assert f.read() == b"wheel bytes"
    assert files_below(store.root) == [PATH]  # no temporary left behind
    assert store.metadata(PATH) == META


def test_a_temporary_name_a_killed_process_left_is_skipped(tmp_path, monkeypatch):
    """Temporaries are ``.tmp-<pid>-<n>`` (no random names); a leftover of a process that had
    the same pid is neither reused nor touched."""
    monkeypatch.setattr(cloudpypi_base.files, "_counter", itertools.count())
    store = LocalStorage(root=str(tmp_path / "s"))
    folder = os.path.join(store.root, *PATH.split("/")[:-1])
    os.makedirs(folder)
    leftover = os.path.join(folder, f".tmp-{os.getpid()}-0")
    with open(leftover, "wb") as f:
        f.write(b"a killed writer's")
    store.put(PATH, io.BytesIO(b"wheel"))
    with open(leftover, "rb") as f:
        assert f.read() == b"a killed writer's"
    with store.open(PATH) as f:
        assert f.read() == b"wheel"
    folder_name = PATH.rsplit("/", 1)[0]
    assert [t.name for t in store.stale_temporaries(-1)] == [f"{folder_name}/.tmp-{os.getpid()}-0"]


class _DiesMidway(io.RawIOBase):
    """A body whose second read kills its process (kill -9 in the middle of a put)."""

    def __init__(self) -> None:
        self.reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.reads += 1
        if self.reads > 1:
            os.kill(os.getpid(), signal.SIGKILL)
        buffer[:5] = b"part-"
        return 5


def _put_and_die(root: str) -> None:
    LocalStorage(root=root).put(PATH, io.BufferedReader(_DiesMidway(), 5))


def test_a_put_killed_midway_leaves_only_a_temporary_that_stale_temporaries_lists(tmp_path):
    root = str(tmp_path / "s")
    child = multiprocessing.get_context("fork").Process(target=_put_and_die, args=(root,))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    store = LocalStorage(root=root)
    assert not store.exists(PATH) and list(store.list()) == []
    left = list(store.stale_temporaries(-1))
    assert len(left) == 1 and left[0].name.startswith(PATH.rsplit("/", 1)[0] + f"/.tmp-{child.pid}-")
    store.remove_temporary(left[0])
    assert files_below(root) == []
