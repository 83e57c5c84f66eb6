"""LocalStorage.batch: the objects put in a batch are made durable at its end, before it
returns (store, then commit): one syncfs of the filesystem (Linux), shared by the batches
that end at the same time; elsewhere an fsync of each file and of each folder once.
Outside a batch each put fsyncs its file and its folder."""

from __future__ import annotations

import errno
import io
import os
import threading
import time

import pytest

import storage.local
from storage.base import StorageUnavailable
from storage.local import LocalStorage


@pytest.fixture
def synced(monkeypatch):
    """The paths fsync (or syncfs, as "syncfs <folder>") was called on, in order; both still run."""
    calls: list[str] = []
    real_fsync, real_syncfs = os.fsync, storage.local.syncfs

    def fsync(fd):
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    def syncfs(folder):
        calls.append(f"syncfs {folder}")
        return real_syncfs(folder)

    monkeypatch.setattr(storage.local.os, "fsync", fsync)
    monkeypatch.setattr(storage.local, "syncfs", syncfs)
    return calls


@pytest.fixture(params=["attributes", "side files"])
def headers_in(request, monkeypatch):
    """Where the content type and metadata go: the file's extended attribute, or (on a
    filesystem without user attributes) a side file, which is fsynced too."""
    if request.param == "side files":

        def refused(*args, **kw):
            raise OSError(errno.ENOTSUP, "Operation not supported")

        monkeypatch.setattr(storage.local.os, "setxattr", refused)
    return request.param


def rel(store: LocalStorage, calls: list[str]) -> list[str]:
    return [os.path.relpath(c, store.root) for c in calls]


def test_a_put_outside_a_batch_fsyncs_its_file_its_side_file_and_folder(tmp_path, synced, headers_in):
    """The side file (content type, metadata), where there is one, is on disk before its
    rename: a crash never leaves a stored object with an empty one."""
    store = LocalStorage(root=str(tmp_path / "s"))
    store.put("packages/aa/x.whl", io.BytesIO(b"x"), content_type="application/zip")
    folder = os.path.join(store.root, "packages", "aa")
    files = 1 if headers_in == "attributes" else 2
    assert len(synced) == files + 1 and synced[files] == folder
    temporaries = synced[:files]
    assert all(os.path.dirname(c) == folder and os.path.basename(c).startswith(".tmp-") for c in temporaries)


def test_a_batch_ends_with_one_syncfs_and_no_fsync(tmp_path, synced):
    store = LocalStorage(root=str(tmp_path / "s"))
    spool = tmp_path / "spool"
    spool.write_bytes(b"wheel bytes")
    with store.batch():
        store.put_file("packages/aa/x.whl", str(spool))  # a hard link
        store.put("packages/aa/x.whl.metadata", io.BytesIO(b"meta"))
        with store.batch():
            store.put("packages/bb/y.whl", io.BytesIO(b"y"))
            store.put("packages/bb/y.whl.metadata", io.BytesIO(b"y"))
        assert synced == []  # nothing yet: the end of the outer batch does it
    assert len(synced) == 1 and synced[0].startswith("syncfs " + store.root)
    with store.batch():
        pass
    assert len(synced) == 1  # an empty batch has nothing to make durable


@pytest.mark.parametrize("why", ["no syncfs", "a small batch"])
def test_without_syncfs_a_batch_fsyncs_each_file_then_each_folder_once(
    tmp_path, synced, monkeypatch, why, headers_in
):
    """Where syncfs is missing, or for a batch too small to be worth flushing everything."""
    if why == "no syncfs":
        monkeypatch.setattr(storage.local, "_syncfs", None)
    else:
        monkeypatch.setattr(storage.local, "SYNCFS_FROM", 4)
    store = LocalStorage(root=str(tmp_path / "s"))
    with store.batch():
        store.put("packages/aa/x.whl", io.BytesIO(b"x"))
        store.put("packages/aa/x.whl.metadata", io.BytesIO(b"meta"))
        store.put("packages/bb/y.whl", io.BytesIO(b"y"))
        assert synced == []
    side = headers_in == "side files"
    assert rel(store, synced) == [
        "packages/aa/x.whl",
        *(["packages/aa/x.whl.cloudpypi-meta"] if side else []),
        "packages/aa/x.whl.metadata",
        *(["packages/aa/x.whl.metadata.cloudpypi-meta"] if side else []),
        "packages/bb/y.whl",
        *(["packages/bb/y.whl.cloudpypi-meta"] if side else []),
        "packages/aa",
        "packages/bb",
    ]


def test_batches_are_per_thread(tmp_path, synced):
    """Another thread's put during a batch is durable when it returns, not at the batch's end."""
    store = LocalStorage(root=str(tmp_path / "s"))
    with store.batch():
        t = threading.Thread(target=store.put, args=("packages/cc/z.whl", io.BytesIO(b"z")))
        t.start()
        t.join()
        assert len(synced) == 2 and rel(store, synced)[1] == "packages/cc"


def test_batches_ending_while_a_syncfs_runs_share_the_next_one(tmp_path, monkeypatch):
    """Group commit: A's syncfs runs; B and C end meanwhile (their writes may postdate A's
    start, so A's does not count for them); one more syncfs serves both."""
    store = LocalStorage(root=str(tmp_path / "s"))
    calls: list[str] = []
    release = threading.Event()

    def syncfs(folder):
        calls.append(folder)
        if len(calls) == 1:
            release.wait(30)

    monkeypatch.setattr(storage.local, "syncfs", syncfs)

    def one(name: str) -> None:
        with store.batch():
            for n in range(storage.local.SYNCFS_FROM):
                store.put(f"packages/{name}/{n}.whl", io.BytesIO(b"f"))

    a = threading.Thread(target=one, args=("aa",))
    a.start()
    while not calls:
        time.sleep(0.01)
    others = [threading.Thread(target=one, args=(n,)) for n in ("bb", "cc")]
    for t in others:
        t.start()
    group = next(iter(store._group_syncs.values()))
    while len(group._cond._waiters) < 2:  # both wait for the syncfs after A's
        time.sleep(0.01)
    release.set()
    for t in (a, *others):
        t.join(30)
    assert len(calls) == 2


def test_a_failed_batch_skips_the_flush_and_a_failed_flush_is_unavailable(tmp_path, synced, monkeypatch):
    store = LocalStorage(root=str(tmp_path / "s"))
    with pytest.raises(KeyError), store.batch():
        store.put("packages/aa/x.whl", io.BytesIO(b"x"))
        raise KeyError("caller")
    assert synced == []

    def broken(folder):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(storage.local, "syncfs", broken)
    with pytest.raises(StorageUnavailable), store.batch():
        for n in range(storage.local.SYNCFS_FROM):
            store.put(f"packages/aa/{n}.whl", io.BytesIO(b"y"))


@pytest.mark.parametrize("objects", [2, storage.local.SYNCFS_FROM])
def test_a_batch_without_sync_leaves_its_objects_to_a_later_sync_of_their_paths(tmp_path, synced, objects):
    """``batch(sync=False)`` (a mirror's worker process) flushes nothing; ``sync`` of the
    paths, from another store on the same folder (the parent), does what the batch's end
    would have: one syncfs, or for a few objects an fsync of each and of their folder."""
    worker = LocalStorage(root=str(tmp_path / "s"))
    paths = [f"packages/aa/{n}.whl" for n in range(objects)]
    with worker.batch(sync=False):
        for path in paths:
            worker.put(path, io.BytesIO(b"x"))
    assert synced == []
    LocalStorage(root=str(tmp_path / "s")).sync(paths)
    if objects >= storage.local.SYNCFS_FROM:
        assert synced == [f"syncfs {os.path.join(worker.root, 'packages', 'aa')}"]
    else:
        assert rel(worker, synced) == [*paths, "packages/aa"]
