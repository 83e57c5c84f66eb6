"""LocalStorage.batch: the fsyncs of the objects put in a batch are done at its end, before
it returns (store, then commit), each file and each folder once; outside a batch each put
does its own."""

from __future__ import annotations

import io
import os
import threading

import pytest

import storage.local
from storage.base import StorageUnavailable
from storage.local import LocalStorage


@pytest.fixture
def synced(monkeypatch):
    """The paths fsync was called on, in order (the real fsync still runs)."""
    calls: list[str] = []
    real = os.fsync

    def spy(fd):
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(storage.local.os, "fsync", spy)
    return calls


def names(store: LocalStorage, calls: list[str]) -> list[str]:
    return [os.path.relpath(c, store.root) for c in calls]


def test_a_put_outside_a_batch_fsyncs_its_file_and_folder(tmp_path, synced):
    store = LocalStorage(root=str(tmp_path / "s"))
    store.put("packages/aa/x.whl", io.BytesIO(b"x"))
    assert len(synced) == 2 and synced[1] == os.path.join(store.root, "packages", "aa")


def test_a_batch_fsyncs_at_its_end_each_file_and_each_folder_once(tmp_path, synced):
    store = LocalStorage(root=str(tmp_path / "s"))
    spool = tmp_path / "spool"
    spool.write_bytes(b"wheel bytes")
    with store.batch():
        store.put_file("packages/aa/x.whl", str(spool))  # a hard link
        store.put("packages/aa/x.whl.metadata", io.BytesIO(b"meta"))
        with store.batch():
            store.put("packages/bb/y.whl", io.BytesIO(b"y"))
        assert synced == []  # nothing yet: the end of the outer batch does it
    assert names(store, synced) == [
        "packages/aa/x.whl",
        "packages/aa/x.whl.metadata",
        "packages/bb/y.whl",
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
        assert len(synced) == 2 and names(store, synced)[1] == "packages/cc"


def test_a_failed_batch_skips_the_fsyncs_and_a_failed_fsync_is_unavailable(tmp_path, synced, monkeypatch):
    store = LocalStorage(root=str(tmp_path / "s"))
    with pytest.raises(KeyError), store.batch():
        store.put("packages/aa/x.whl", io.BytesIO(b"x"))
        raise KeyError("caller")
    assert synced == []

    def broken(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(storage.local.os, "fsync", broken)
    with pytest.raises(StorageUnavailable), store.batch():
        store.put("packages/aa/y.whl", io.BytesIO(b"y"))
