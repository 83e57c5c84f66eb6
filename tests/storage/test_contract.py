"""The storage contract, written once and run against every backend."""

from __future__ import annotations

import io
import os
import threading

import pytest

from storage.base import InvalidPath, NotFound, ObjectInfo, RangeNotSatisfiable, StorageError

PATH = "packages/ab/cd/abcdef0123/demo-1.0-py3-none-any.whl"


def put_bytes(store, path, data, **kw):
    store.put(path, io.BytesIO(data), **kw)


def read_all(store, path):
    f = store.open(path)
    try:
        return f.read()
    finally:
        f.close()


def test_put_then_open_returns_the_same_bytes(store):
    data = os.urandom(300_000)
    put_bytes(store, PATH, data, content_type="application/zip", metadata={"sha256": "x"})
    assert read_all(store, PATH) == data


def test_stat_reports_size_and_type(store):
    put_bytes(store, PATH, b"hello world", content_type="application/zip")
    info = store.stat(PATH)
    assert isinstance(info, ObjectInfo)
    assert info.path == PATH
    assert info.size == 11
    assert info.etag
    assert info.last_modified is not None
    assert info.content_type == "application/zip"


def test_open_streams_in_chunks(store):
    data = os.urandom(3 * 1024 * 1024 + 17)
    put_bytes(store, PATH, data)
    f = store.open(PATH)
    try:
        first = f.read(1000)
        rest = f.read()
    finally:
        f.close()
    assert first + rest == data


def test_put_reads_from_the_current_position(store):
    buf = io.BytesIO(b"skip-me|payload")
    buf.seek(8)
    store.put(PATH, buf)
    assert read_all(store, PATH) == b"payload"


def test_put_replaces_an_existing_object(store):
    put_bytes(store, PATH, b"one")
    put_bytes(store, PATH, b"second")
    assert read_all(store, PATH) == b"second"
    assert store.stat(PATH).size == 6


def test_empty_object(store):
    put_bytes(store, PATH, b"")
    assert store.stat(PATH).size == 0
    assert read_all(store, PATH) == b""


def test_missing_object_raises_not_found(store):
    with pytest.raises(NotFound):
        store.open("packages/no/such/file.whl")
    with pytest.raises(NotFound):
        store.stat("packages/no/such/file.whl")
    with pytest.raises(FileNotFoundError):  # NotFound is a FileNotFoundError
        store.stat("packages/no/such/file.whl")
    assert store.exists("packages/no/such/file.whl") is False


def test_exists(store):
    assert store.exists(PATH) is False
    put_bytes(store, PATH, b"x")
    assert store.exists(PATH) is True


def test_delete_is_idempotent(store):
    put_bytes(store, PATH, b"x")
    store.delete(PATH)
    assert not store.exists(PATH)
    store.delete(PATH)  # a second delete is not an error
    with pytest.raises(NotFound):
        store.open(PATH)


def test_list_by_prefix(store):
    paths = ["packages/aa/one.whl", "packages/aa/two.whl", "packages/bb/three.tar.gz"]
    for i, p in enumerate(paths):
        put_bytes(store, p, b"x" * (i + 1))
    listed = {info.path: info.size for info in store.list("packages/aa/")}
    assert listed == {"packages/aa/one.whl": 1, "packages/aa/two.whl": 2}
    assert {info.path for info in store.list()} >= set(paths)
    assert list(store.list("nothing/")) == []


def test_list_is_in_path_order_with_files_and_folders_side_by_side(store):
    # fsck and migrate-storage walk the listing beside the database's path-ordered objects:
    # a listing out of order costs them a sort of the whole listing in memory.
    paths = [
        "packages/ab/z.whl",
        "packages/ab/c/d.whl",
        "packages/ab/c-d.whl",
        "packages/ab/C.whl",
        "packages/ab/c.whl",
        "packages/ab/\u00e9.whl",
        "packages/ab/c/a/b.whl",
    ]
    for p in paths:
        put_bytes(store, p, b"x")
    listed = [info.path for info in store.list("packages/ab/")]
    assert listed == sorted(paths)
    assert [info.path for info in store.list("packages/ab/c")] == sorted(
        p for p in paths if p.startswith("packages/ab/c")
    )
    assert [info.path for info in store.list("packages/ab/c/")] == [
        "packages/ab/c/a/b.whl",
        "packages/ab/c/d.whl",
    ]


def test_metadata_object_beside_file(store):
    put_bytes(store, PATH, b"wheel")
    put_bytes(store, PATH + ".metadata", b"Metadata-Version: 2.1\n", content_type="text/plain")
    assert read_all(store, PATH + ".metadata") == b"Metadata-Version: 2.1\n"
    assert {i.path for i in store.list("packages/ab/")} == {PATH, PATH + ".metadata"}


@pytest.mark.parametrize("bad", ["", "/abs/path", "a/../b", "a//b", "./a", "a\\b", "a/\x00b"])
def test_unsafe_paths_are_refused(store, bad):
    with pytest.raises(InvalidPath):
        store.put(bad, io.BytesIO(b"x"))
    with pytest.raises(InvalidPath):
        store.open(bad)


def test_concurrent_writers_leave_one_whole_object(store):
    blobs = [bytes([i]) * 200_000 for i in range(4)]
    errors = []

    def write(b):
        try:
            put_bytes(store, PATH, b)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(b,)) for b in blobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert read_all(store, PATH) in blobs


def test_failed_put_leaves_nothing(store):
    class Exploding(io.RawIOBase):
        def __init__(self):
            self.sent = 0

        def readable(self):
            return True

        def readinto(self, b):
            if self.sent > 100_000:
                raise OSError("client went away")
            n = len(b)
            b[:n] = b"z" * n
            self.sent += n
            return n

    # The source's own OSError, or the backend's StorageError wrapping it.
    with pytest.raises((OSError, StorageError)):
        store.put(PATH, io.BufferedReader(Exploding()))
    assert not store.exists(PATH)
    assert [i.path for i in store.list()] == []


def test_put_file_from_a_local_path(store, tmp_path):
    data = os.urandom(200_000)
    src = tmp_path / "spool.bin"
    src.write_bytes(data)
    store.put_file(PATH, str(src), content_type="application/zip", metadata={"sha256": "x"})
    src.unlink()  # the caller may delete its file afterwards
    assert read_all(store, PATH) == data
    assert store.stat(PATH).size == len(data)


def test_move_file_stores_the_file_and_takes_it(store, tmp_path):
    """``move_file``: the object is the file's bytes with its headers, and the file is gone."""
    data = os.urandom(200_000)
    src = tmp_path / "spool.part"
    src.write_bytes(data)
    with store.batch():
        store.move_file(PATH, str(src), content_type="application/zip", metadata={"sha256": "moved"})
    assert not src.exists()
    assert read_all(store, PATH) == data
    assert store.stat(PATH).content_type == "application/zip"
    assert store.metadata(PATH).get("sha256") == "moved"


# -- ranged reads and what open() tells of the object ---------------------------------


def test_open_carries_the_object_info(store):
    data = os.urandom(5000)
    put_bytes(store, PATH, data, content_type="application/zip")
    with store.open(PATH) as f:
        assert f.info.size == 5000 and f.info.etag and f.info.last_modified is not None
        assert f.info.etag == store.stat(PATH).etag
        assert f.range is None
        assert f.read() == data


@pytest.mark.parametrize(
    ("start", "stop", "expected"),
    [
        (100, 200, (100, 200)),
        (4990, None, (4990, 5000)),
        (-10, None, (4990, 5000)),
        (4000, 99_999, (4000, 5000)),
        (-99_999, None, (0, 5000)),
    ],
)
def test_open_reads_only_the_range_asked(store, start, stop, expected):
    data = os.urandom(5000)
    put_bytes(store, PATH, data)
    with store.open(PATH, start=start, stop=stop) as f:
        assert f.range == expected
        assert f.info.size == 5000
        assert f.read() == data[expected[0] : expected[1]]


def test_a_range_past_the_end_is_not_satisfiable(store):
    put_bytes(store, PATH, b"0123456789")
    with pytest.raises(RangeNotSatisfiable):
        store.open(PATH, start=10)
    with pytest.raises(NotFound):
        store.open(PATH + ".missing", start=2, stop=4)


def test_an_inverted_range_is_refused_before_the_store(store):
    with pytest.raises(ValueError):
        store.open(PATH, start=5, stop=5)


def test_every_public_method_checks_the_path(store):
    for bad in ("", "/abs", "a/../b", "a//b", "a\x00b"):
        with pytest.raises(InvalidPath):
            store.open(bad)
        with pytest.raises(InvalidPath):
            store.open(bad, start=1, stop=2)
        with pytest.raises(InvalidPath):
            store.put(bad, io.BytesIO(b"x"))
        with pytest.raises(InvalidPath):
            store.stat(bad)
        with pytest.raises(InvalidPath):
            store.delete(bad)
        with pytest.raises(InvalidPath):
            store.metadata(bad)
        with pytest.raises(InvalidPath):
            store.public_url(bad)


def test_cache_control_is_the_callers(store):
    """put takes the Cache-Control the caller's policy decides; none is invented."""
    put_bytes(store, PATH, b"data", cache_control="max-age=60, public")
    put_bytes(store, PATH + ".metadata", b"meta")
    assert read_all(store, PATH) == b"data"


def test_objects_put_in_a_batch_are_there_when_it_ends(store, tmp_path):
    """``batch``: puts inside it (nested too) are whole objects, readable in and after it;
    an error inside it propagates."""
    local = tmp_path / "spool.whl"
    local.write_bytes(b"from a path")
    other = PATH.replace("abcdef0123", "fedcba3210")
    with store.batch():
        put_bytes(store, PATH, b"first")
        with store.batch():
            store.put_file(other, str(local))
        assert read_all(store, PATH) == b"first"
    assert read_all(store, PATH) == b"first" and read_all(store, other) == b"from a path"
    with pytest.raises(RuntimeError), store.batch():
        put_bytes(store, PATH + ".metadata", b"meta")
        raise RuntimeError("the caller failed")
    with store.batch():
        pass  # an empty batch, after a failed one, is fine


def test_objects_of_a_batch_without_sync_are_there_and_sync_takes_their_paths(store):
    """``batch(sync=False)``: whole objects at once; ``sync`` of their paths (durable after it)
    returns, and refuses an unsafe path as every method does."""
    paths = [PATH, PATH + ".metadata"]
    with store.batch(sync=False):
        put_bytes(store, PATH, b"object")
        put_bytes(store, PATH + ".metadata", b"meta")
    store.sync(paths)
    store.sync([])
    assert read_all(store, PATH) == b"object" and read_all(store, PATH + ".metadata") == b"meta"
    with pytest.raises(InvalidPath):
        store.sync(["a/../b"])


# -- streamed uploads (begin_upload) ---------------------------------------------------

#: More than one S3 part (8 MiB) and several Swift segments (1 MiB in these stores).
STREAMED = 11 * 1024 * 1024 + 5


def stream(upload, data, pieces=(1, 65536, 1 << 20, 3 << 20)):
    """Write ``data`` to ``upload`` in uneven pieces, as a request body arrives."""
    offset, n = 0, 0
    while offset < len(data):
        size = pieces[n % len(pieces)]
        upload.write(data[offset : offset + size])
        offset += size
        n += 1


@pytest.mark.parametrize("size", [10, STREAMED])
def test_a_streamed_upload_appears_only_when_completed(store, size):
    data = os.urandom(size)
    headers = {"content_type": "application/zip", "metadata": {"sha256": "x"}, "cache_control": "max-age=9"}
    upload = store.begin_upload(PATH, size_hint=size, **headers)
    stream(upload, data)
    assert not store.exists(PATH)
    assert [i.path for i in store.list("packages/")] == []
    upload.complete(PATH, **headers)
    upload.abort()  # after complete: nothing happens
    assert read_all(store, PATH) == data
    info = store.stat(PATH)
    assert (info.size, info.content_type) == (size, "application/zip")
    assert store.metadata(PATH).get("sha256") == "x"
    assert [i.path for i in store.list()] == [PATH]
    assert list(store.stale_temporaries(0)) == []


def test_a_streamed_upload_whose_path_is_known_only_at_the_end(store):
    data = os.urandom(STREAMED)
    upload = store.begin_upload(None)
    stream(upload, data)
    upload.complete(PATH, content_type="application/zip", metadata={"sha256": "late"})
    assert read_all(store, PATH) == data
    assert store.stat(PATH).content_type == "application/zip"
    assert store.metadata(PATH).get("sha256") == "late"
    assert [i.path for i in store.list()] == [PATH]
    assert list(store.stale_temporaries(0)) == []


def test_a_streamed_upload_takes_the_headers_given_at_completion(store):
    upload = store.begin_upload(PATH, content_type="application/zip", metadata={"sha256": "guess"})
    stream(upload, os.urandom(STREAMED))
    upload.complete(PATH, content_type="application/gzip", metadata={"sha256": "real"})
    assert store.stat(PATH).content_type == "application/gzip"
    assert store.metadata(PATH).get("sha256") == "real"


@pytest.mark.parametrize("size", [10, STREAMED])
def test_an_aborted_streamed_upload_leaves_nothing(store, size):
    upload = store.begin_upload(PATH)
    stream(upload, os.urandom(size))
    upload.abort()
    assert not store.exists(PATH)
    assert [i.path for i in store.list()] == []
    assert list(store.stale_temporaries(0)) == []
    with pytest.raises(ValueError):
        upload.complete(PATH)


def test_a_streamed_upload_replaces_an_existing_object(store):
    put_bytes(store, PATH, b"old")
    upload = store.begin_upload(PATH)
    data = os.urandom(STREAMED)
    stream(upload, data)
    assert read_all(store, PATH) == b"old"
    upload.complete(PATH)
    assert read_all(store, PATH) == data


def test_a_streamed_upload_can_store_the_callers_local_copy(store, tmp_path):
    """Given ``local_copy``, a backend that does not stream stores that file at completion."""
    data = os.urandom(STREAMED)
    copy = tmp_path / "spool.bin"
    copy.write_bytes(data)
    upload = store.begin_upload(PATH, local_copy=str(copy))
    stream(upload, data)
    upload.complete(PATH)
    assert read_all(store, PATH) == data
