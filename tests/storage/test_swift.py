"""Swift-only tests: settings and error mapping, against the session's one-node Swift.

Behaviour every backend shares is in test_contract.py; this file covers what
only native Swift has: from_config, the headers and metadata on stored
objects, Static Large Objects (segments written, read, replaced and deleted),
the prefix, public URLs, and how Swift's failures are reported.
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
import tracemalloc
import uuid

import pytest
from swiftclient.client import ClientException

import storage
from storage.base import (
    InvalidPath,
    NotFound,
    StorageMisconfigured,
    StorageUnavailable,
)
from storage.swift import DEFAULT_SEGMENT_SIZE, SwiftStorage

PATH = "packages/ab/cd/abcdef/demo-1.0.tar.gz"
#: A Cache-Control the caller's policy decided (the store invents none).
CACHE = "max-age=31536000, immutable, public"
KiB = 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings_for(service, container="c", **extra):
    """Settings as config.ini would give them: for the test Swift, or (None) for no server."""
    values = {
        "auth_url": service.auth_url if service else "http://127.0.0.1:9/auth/v1.0",
        "user": "test:tester",
        "key": service.key if service else "secret-key",
        "container": container,
    }
    values.update(extra)
    return {k: v for k, v in values.items() if v is not None}


def misconfigured(settings, tmp_path) -> StorageMisconfigured:
    with pytest.raises(StorageMisconfigured) as info:
        SwiftStorage.from_config(settings, data_dir=str(tmp_path))
    return info.value


def new_store(service, container, **kw) -> SwiftStorage:
    kw.setdefault("retries", 0)
    return SwiftStorage(
        auth_url=service.auth_url, user=service.user, key=service.key, container=container, **kw
    )


def segment_names(service, container):
    """What the container's segment container holds."""
    conn = service.connection()
    try:
        return [o["name"] for o in conn.get_container(f"{container}_segments")[1]]
    except ClientException as exc:  # no segment container yet: no segments
        if exc.http_status == 404:
            return []
        raise
    finally:
        conn.close()


def read_all(store, path):
    with store.open(path) as f:
        return f.read()


# -- from_config ------------------------------------------------------------------------


def test_from_config_defaults(tmp_path):
    store = SwiftStorage.from_config(settings_for(None, "pkgs"), data_dir=str(tmp_path))
    assert store.container == "pkgs"
    assert store.segment_container == "pkgs_segments"
    assert store.prefix == ""
    assert store.segment_size == DEFAULT_SEGMENT_SIZE
    assert store.public_url(PATH) is None


@pytest.mark.parametrize(
    ("value", "size"), [("5242880", 5 * 1024**2), ("512MB", 512 * 1024**2), ("2GiB", 2 * 1024**3)]
)
def test_segment_size_takes_the_same_units_as_s3(tmp_path, value, size):
    settings = settings_for(None, segment_size=value)
    assert SwiftStorage.from_config(settings, data_dir=str(tmp_path)).segment_size == size


def test_the_factory_builds_it(tmp_path):
    settings = dict(settings_for(None), backend="swift")
    assert isinstance(storage.from_config(settings, data_dir=str(tmp_path)), SwiftStorage)


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"container": None}, "container"),
        ({"container": "a/b"}, "container"),
        ({"container": "x" * 257}, "container"),
        ({"auth_url": None}, "auth_url"),
        ({"auth_url": "127.0.0.1:8080/auth/v1.0"}, "auth_url"),
        ({"auth_version": "4"}, "auth_version"),
        ({"user": None}, "user"),
        ({"key": None}, "key"),
        ({"key_file": "k"}, "key_file"),  # key and key_file together
        ({"project": "p", "tenant": "t"}, "tenant"),
        ({"prefix": "a/../b"}, "prefix"),
        ({"segment_size": "lots"}, "segment_size"),
        ({"segment_size": "0"}, "segment_size"),
        ({"segment_size": "1000"}, "segment_size"),  # below 1 MiB
        ({"segment_size": str(6 * 1024**3)}, "segment_size"),  # above Swift's 5 GiB
        ({"timeout": "soon"}, "timeout"),
        ({"timeout": "-1"}, "timeout"),
        ({"retries": "-1"}, "retries"),
        ({"retries": "2.5"}, "retries"),
        ({"public_url": "cdn.example.org/files"}, "public_url"),
    ],
)
def test_invalid_settings_name_their_key(tmp_path, extra, key):
    exc = misconfigured(settings_for(None, **extra), tmp_path)
    assert exc.key == key
    assert "secret-key" not in str(exc)


def test_keystone_without_keystoneclient_says_what_to_install(tmp_path):
    try:
        import keystoneclient  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("python-keystoneclient is installed here")
    exc = misconfigured(settings_for(None, auth_version="3", project="p"), tmp_path)
    assert exc.key == "auth_version"
    assert "pip install python-keystoneclient" in str(exc)


def test_key_file_is_read_relative_to_data_dir(tmp_path, swift_service):
    (tmp_path / "swift.key").write_text(swift_service.key + "\n")
    settings = settings_for(swift_service, f"kf-{uuid.uuid4().hex[:8]}", key=None)
    settings["key_file"] = "swift.key"
    store = SwiftStorage.from_config(settings, data_dir=str(tmp_path))
    store.check()  # logs in with the key from the file


@pytest.mark.parametrize("content", [None, "  \n"])
def test_unreadable_or_empty_key_file(tmp_path, content):
    if content is not None:
        (tmp_path / "swift.key").write_text(content)
    settings = settings_for(None, key=None, key_file="swift.key")
    assert misconfigured(settings, tmp_path).key == "key_file"


def test_prefix_is_normalised(tmp_path):
    store = SwiftStorage.from_config(settings_for(None, prefix="/pypi/files/"), data_dir="/")
    assert store.prefix == "pypi/files/"


# -- check, credentials and reachability ----------------------------------------------------


def test_check_creates_a_missing_container(swift_service):
    container = f"new-{uuid.uuid4().hex[:12]}"
    new_store(swift_service, container).check()
    conn = swift_service.connection()
    assert conn.head_container(container) is not None
    conn.close()


def test_check_accepts_an_existing_container(swift_service, swift_container):
    new_store(swift_service, swift_container).check()


def test_bad_key_is_misconfigured_and_never_shown(swift_service, swift_container):
    store = SwiftStorage(
        auth_url=swift_service.auth_url,
        user=swift_service.user,
        key="not-the-right-key",
        container=swift_container,
        retries=0,
    )
    with pytest.raises(StorageMisconfigured) as info:
        store.check()
    assert info.value.key == "key"
    assert "not-the-right-key" not in str(info.value)
    assert swift_service.key not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    with pytest.raises(StorageMisconfigured):  # every operation says the same
        store.put(PATH, io.BytesIO(b"x"))


def test_wrong_auth_path_names_auth_url(swift_service, swift_container):
    store = SwiftStorage(
        auth_url=swift_service.proxy_url + "/auth/v9",
        user=swift_service.user,
        key=swift_service.key,
        container=swift_container,
    )
    with pytest.raises(StorageMisconfigured) as info:
        store.check()
    assert info.value.key == "auth_url"


def test_unreachable_auth_url_is_unavailable_fast():
    auth_url = f"http://127.0.0.1:{free_port()}/auth/v1.0"
    store = SwiftStorage(auth_url=auth_url, user="u", key="secret-key", container="c", retries=3)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as info:
        store.check()
    assert time.monotonic() - started < 2  # check() tries once, whatever `retries` says
    assert auth_url in str(info.value)
    assert "secret-key" not in str(info.value)
    store = SwiftStorage(auth_url=auth_url, user="u", key="secret-key", container="c", retries=0)
    for call in (
        lambda: store.put(PATH, io.BytesIO(b"x")),
        lambda: store.open(PATH),
        lambda: store.stat(PATH),
        lambda: store.exists(PATH),
        lambda: store.delete(PATH),
        lambda: list(store.list()),
    ):
        with pytest.raises(StorageUnavailable):
            call()


def test_missing_container_is_misconfigured(swift_service):
    store = new_store(swift_service, f"gone-{uuid.uuid4().hex[:12]}")  # never check()ed
    with pytest.raises(StorageMisconfigured) as info:
        store.put(PATH, io.BytesIO(b"x"))
    assert info.value.key == "container"
    with pytest.raises(StorageMisconfigured):
        list(store.list())
    with pytest.raises(NotFound):
        store.stat(PATH)


def test_not_found_hides_swiftclient(swift_service, swift_container):
    store = new_store(swift_service, swift_container)
    with pytest.raises(NotFound) as info:
        store.open(PATH)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert "swiftclient" not in type(info.value).__module__


# -- what is stored ---------------------------------------------------------------------------


def test_headers_and_metadata_on_the_object(swift_service, swift_container):
    store = new_store(swift_service, swift_container)
    store.put(
        PATH,
        io.BytesIO(b"data"),
        content_type="application/x-tar",
        metadata={"sha256": "ab" * 32, "blake2b_256": "cd" * 32},
        cache_control=CACHE,
    )
    conn = swift_service.connection()
    headers = conn.head_object(swift_container, PATH)
    conn.close()
    assert headers["content-type"] == "application/x-tar"
    assert headers["cache-control"] == CACHE
    assert headers["x-object-meta-sha256"] == "ab" * 32
    # Swift keeps metadata as HTTP headers: '_' comes back as '-'.
    assert store.metadata(PATH) == {"sha256": "ab" * 32, "blake2b-256": "cd" * 32}
    info = store.stat(PATH)
    assert info.etag == "8d777f385d3dfec8815d20f7496026dc"  # md5 of b"data"
    assert info.last_modified.tzinfo is not None


def test_list_pages_through_the_container(swift_service, swift_container):
    store = new_store(swift_service, swift_container, prefix="p")
    store._page_size = 2
    paths = [f"packages/{i:02d}.whl" for i in range(5)]
    for p in paths:
        store.put(p, io.BytesIO(b"x"))
    assert sorted(i.path for i in store.list("packages/")) == paths


def test_list_agrees_with_stat(swift_service, swift_container):
    store = new_store(swift_service, swift_container)
    store.put(PATH, io.BytesIO(b"hello"), content_type="text/plain")
    (listed,) = store.list("packages/ab/cd/")
    info = store.stat(PATH)
    assert (listed.path, listed.size, listed.etag) == (info.path, info.size, info.etag)
    assert listed.last_modified == info.last_modified
    assert listed.content_type == "text/plain"


def test_memory_stays_flat_for_a_large_file(swift_service, swift_container, tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for _ in range(24):
            f.write(os.urandom(1024 * 1024))
    store = new_store(swift_service, swift_container, segment_size=8 * 1024 * 1024)
    tracemalloc.start()
    try:
        with open(big, "rb") as f:
            store.put(PATH, f)
        with store.open(PATH) as r:
            while r.read(64 * KiB):
                pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 * 1024 * 1024, f"peak {peak} bytes for a 24 MiB file"
    assert store.stat(PATH).size == 24 * 1024 * 1024


# -- Static Large Objects ----------------------------------------------------------------------


def test_large_object_round_trip_and_delete(swift_service, swift_container, tmp_path):
    data = os.urandom(1024 * KiB + 5)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    store = new_store(swift_service, swift_container, segment_size=256 * KiB)
    with open(src, "rb") as f:
        store.put(PATH, f, content_type="application/gzip", metadata={"sha256": "x"}, cache_control=CACHE)

    segments = segment_names(swift_service, swift_container)
    assert len(segments) == 5
    assert all(s.startswith(PATH + "/") for s in segments)
    conn = swift_service.connection()
    headers = conn.head_object(swift_container, PATH)
    conn.close()
    assert headers["x-static-large-object"].lower() == "true"
    assert headers["cache-control"] == CACHE
    assert headers["content-type"] == "application/gzip"

    assert read_all(store, PATH) == data
    with store.open(PATH, start=300 * KiB, stop=600 * KiB) as f:  # across two segments
        assert f.read() == data[300 * KiB : 600 * KiB] and f.range == (300 * KiB, 600 * KiB)
    info = store.stat(PATH)
    assert info.size == len(data)
    assert info.etag == headers["etag"].strip('"')  # the manifest's ETag
    (listed,) = store.list("packages/ab/cd/")
    assert (listed.size, listed.etag) == (len(data), info.etag)

    store.delete(PATH)
    assert not store.exists(PATH)
    assert segment_names(swift_service, swift_container) == []
    store.delete(PATH)


def test_exactly_segment_size_is_one_object(swift_service, swift_container):
    store = new_store(swift_service, swift_container, segment_size=256 * KiB)
    store.put(PATH, io.BytesIO(b"s" * 256 * KiB))
    assert segment_names(swift_service, swift_container) == []
    assert store.stat(PATH).size == 256 * KiB


def test_unseekable_stream_is_spooled_then_segmented(swift_service, swift_container):
    data = os.urandom(600 * KiB)
    read_fd, write_fd = os.pipe()

    def feed():
        with os.fdopen(write_fd, "wb") as w:
            w.write(data)

    feeder = threading.Thread(target=feed)
    feeder.start()
    store = new_store(swift_service, swift_container, segment_size=256 * KiB)
    with os.fdopen(read_fd, "rb") as r:
        store.put(PATH, r)
    feeder.join()
    assert read_all(store, PATH) == data
    assert len(segment_names(swift_service, swift_container)) == 3


def test_replacing_a_large_object_removes_its_old_segments(swift_service, swift_container):
    store = new_store(swift_service, swift_container, segment_size=256 * KiB)
    store.put(PATH, io.BytesIO(os.urandom(700 * KiB)))
    first = set(segment_names(swift_service, swift_container))
    store.put(PATH, io.BytesIO(b"y" * (600 * KiB)))
    second = set(segment_names(swift_service, swift_container))
    assert len(first) == len(second) == 3 and not first & second
    store.put(PATH, io.BytesIO(b"small"))
    assert segment_names(swift_service, swift_container) == []
    assert read_all(store, PATH) == b"small"


class FailingFile(io.RawIOBase):
    """A seekable file of ``size`` bytes whose reads fail past ``fail_at``."""

    def __init__(self, size, fail_at):
        self.size, self.fail_at, self.pos = size, fail_at, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=0):
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    def tell(self):
        return self.pos

    def readinto(self, b):
        if self.pos >= self.fail_at:
            raise OSError("disk went away")
        n = min(len(b), self.size - self.pos, self.fail_at - self.pos)
        b[:n] = b"f" * n
        self.pos += n
        return n


def test_failed_large_upload_removes_its_segments(swift_service, swift_container):
    store = new_store(swift_service, swift_container, segment_size=256 * KiB)
    with pytest.raises(StorageUnavailable) as info:
        store.put(PATH, FailingFile(1024 * KiB, fail_at=600 * KiB))
    assert "reading the file failed: disk went away" in str(info.value)
    assert not store.exists(PATH)
    assert segment_names(swift_service, swift_container) == []


def test_too_many_segments_names_segment_size(swift_service, swift_container):
    store = new_store(swift_service, swift_container, segment_size=1)
    with pytest.raises(StorageMisconfigured) as info:
        store.put(PATH, io.BytesIO(b"z" * 1001))
    assert info.value.key == "segment_size"
    assert not store.exists(PATH)


# -- prefix and public URLs --------------------------------------------------------------------


def test_prefix_keeps_objects_and_segments_below_it(swift_service, swift_container):
    store = new_store(swift_service, swift_container, prefix="pypi/", segment_size=256 * KiB)
    other = new_store(swift_service, swift_container)
    other.put("packages/outside.whl", io.BytesIO(b"o"))
    store.put(PATH, io.BytesIO(b"p" * (300 * KiB)))
    store.put("packages/small.whl", io.BytesIO(b"s"))

    conn = swift_service.connection()
    names = {o["name"] for o in conn.get_container(swift_container)[1]}
    conn.close()
    assert {f"pypi/{PATH}", "pypi/packages/small.whl"} <= names
    assert all(s.startswith(f"pypi/{PATH}/") for s in segment_names(swift_service, swift_container))
    assert {i.path for i in store.list()} == {PATH, "packages/small.whl"}
    assert {i.path for i in store.list("packages/s")} == {"packages/small.whl"}
    assert other.exists(f"pypi/{PATH}")
    assert not store.exists("packages/outside.whl")


def test_public_url(swift_service, swift_container):
    store = new_store(
        swift_service, swift_container, prefix="pypi", public_url="https://cdn.example.org/files/"
    )
    assert (
        store.public_url("packages/a b/x+1.whl")
        == "https://cdn.example.org/files/pypi/packages/a%20b/x%2B1.whl"
    )
    with pytest.raises(InvalidPath):
        store.public_url("../etc/passwd")
    settings = settings_for(swift_service, public_url="https://swift.example.org/v1/AUTH_x/c")
    store = SwiftStorage.from_config(settings, data_dir="/")
    assert store.public_url("a.whl") == "https://swift.example.org/v1/AUTH_x/c/a.whl"


# -- connections and threads -------------------------------------------------------------------


def test_each_thread_gets_its_own_connection(swift_service, swift_container):
    store = new_store(swift_service, swift_container)
    seen = []

    def work(i):
        store.put(f"packages/t{i}.whl", io.BytesIO(b"t"))
        seen.append(store._conn())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in seen}) == 4
    assert len(list(store.list("packages/t"))) == 4
    store.close()


def test_a_ready_connection_is_used_as_template(swift_service, swift_container):
    conn = swift_service.connection()
    store = SwiftStorage(connection=conn, container=swift_container)
    store.put(PATH, io.BytesIO(b"via template"))
    assert read_all(store, PATH) == b"via template"
    assert store._conn() is not conn  # the template itself is never shared between threads
