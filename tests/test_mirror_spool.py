"""A mirrored file's way into the store: downloaded into ``<data_dir>/tmp`` as
``upstream-<pid>-<n>.part``, verified, then taken by the store (the local backend renames
it into place). A mirror killed mid-download leaves only that spool file, which the
leftovers clean-up (server start, ``fsck --repair``) finds; nothing is in the store."""

from __future__ import annotations

import hashlib
import http.server
import multiprocessing
import os
import signal
import threading
import time

import pytest

from pypi.operations import leftovers
from pypi.upstream.client import HashMismatch, UpstreamClient, UpstreamFile
from pypi.upstream.fetch import fetch_and_store
from storage.local import LocalStorage
from tests.dists import make_wheel

#: The stalling body: 2 MiB, of which 1.5 MiB is sent (the client reads 1 MiB blocks).
SIZE = 2 << 20


class _Upstream:
    """Serves ``/files/<name>``: the wheel, or for ``/files/stalls.whl`` three quarters of a 2 MiB body
    and then nothing until stopped (a download in progress)."""

    def __init__(self, wheel: bytes) -> None:
        release = self.release = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                body = wheel if self.path.endswith("demo-1.0-py3-none-any.whl") else b"x" * SIZE
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path.endswith("stalls.whl"):
                    self.wfile.write(body[: SIZE * 3 // 4])
                    self.wfile.flush()
                    release.wait(60)
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def wheel(tmp_path):
    path = make_wheel(str(tmp_path), "demo", "1.0")
    return open(path, "rb").read()


@pytest.fixture
def upstream(wheel):
    server = _Upstream(wheel)
    yield server
    server.stop()


def _file(upstream, name: str, data: bytes) -> UpstreamFile:
    return UpstreamFile(
        filename=name, url=f"{upstream.url}/files/{name}", sha256=hashlib.sha256(data).hexdigest()
    )


def test_the_store_takes_the_verified_download_and_the_spool_is_left_empty(tmp_path, upstream, wheel):
    spool = str(tmp_path / "data" / "tmp")  # created by the first download
    store = LocalStorage(root=str(tmp_path / "data" / "packages"))
    f = _file(upstream, "demo-1.0-py3-none-any.whl", wheel)
    with store.batch():
        stored = fetch_and_store(UpstreamClient(upstream.url + "/simple/"), store, f, "demo", spool)
    assert os.listdir(spool) == []
    with store.open(stored.path) as obj:
        assert obj.read() == wheel
    assert store.stat(stored.path).content_type and store.metadata(stored.path)["sha256"] == f.sha256
    assert store.exists(stored.path + ".metadata")


def test_a_hash_mismatch_stores_nothing_and_leaves_no_spool_file(tmp_path, upstream, wheel):
    spool = str(tmp_path / "tmp")
    store = LocalStorage(root=str(tmp_path / "packages"))
    f = _file(upstream, "demo-1.0-py3-none-any.whl", b"other bytes")
    with pytest.raises(HashMismatch):
        fetch_and_store(UpstreamClient(upstream.url + "/simple/"), store, f, "demo", spool)
    assert os.listdir(spool) == [] and list(store.list()) == []


def _download_stalling(url: str, root: str, spool: str) -> None:
    f = UpstreamFile(filename="stalls.whl", url=url + "/files/stalls.whl", sha256="0" * 64)
    fetch_and_store(UpstreamClient(url + "/simple/", timeout=60), LocalStorage(root=root), f, "demo", spool)


def test_a_mirror_killed_mid_download_leaves_only_a_spool_file_the_clean_up_finds(tmp_path, upstream):
    spool, root = str(tmp_path / "tmp"), str(tmp_path / "packages")
    child = multiprocessing.get_context("fork").Process(
        target=_download_stalling, args=(upstream.url, root, spool)
    )
    child.start()
    deadline = time.monotonic() + 30
    part = os.path.join(spool, f"upstream-{child.pid}-")

    def written() -> int:
        names = os.listdir(spool) if os.path.isdir(spool) else []
        return sum(os.path.getsize(os.path.join(spool, n)) for n in names)

    while written() < SIZE // 2:  # the first block is in the spool file; the rest stalls
        assert time.monotonic() < deadline and child.is_alive()
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    store = LocalStorage(root=root)
    assert list(store.list()) == [] and list(store.stale_temporaries(-1)) == []
    [left] = leftovers.find(store, spool, -1)
    assert left.temporary is None and left.name.startswith(part) and left.name.endswith(".part")
    assert SIZE // 2 <= left.size <= SIZE * 3 // 4
    removed, failed = leftovers.clean(store, spool, -1)
    assert [r.name for r in removed] == [left.name] and failed == [] and os.listdir(spool) == []
