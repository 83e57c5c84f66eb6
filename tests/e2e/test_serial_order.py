"""Serials follow commit order on PostgreSQL, across worker processes.

Two uploads whose transactions commit out of order: the first is held open
after it has written everything (journal entry included), the second commits
through ``cloudpypi serve`` (2 worker processes), a reader sees the serial N in
between, then the first commits. Nothing may be missed afterwards: /simple/,
/simple/<name>/ (X-PyPI-Last-Serial) and ``changelog_since_serial(N)`` all show
the first upload. With serials handed out at INSERT (``MAX(id)``), the first
upload got the lower serial and stayed invisible to all three.
"""

from __future__ import annotations

import os
import threading
import xmlrpc.client
from contextlib import contextmanager

import pytest
import requests
import webtest

from pypi.app import make_app
from pypi.config import build
from pypi.index.db import Database
from tests.dists import make_wheel
from tests.e2e.clients import PASSWORD
from tests.services.live_server import cloudpypi, start_server, write_config
from tests.uploading import upload, wheel_upload_fields

pytestmark = pytest.mark.e2e


class HeldCommit(Database):
    """A real database that holds the write transaction adding ``filename`` open until released."""

    def __init__(self, url: str, filename: str) -> None:
        super().__init__(url)
        self.filename = filename
        self.reached = threading.Event()
        self.release = threading.Event()

    @contextmanager
    def transaction(self, *, write=False):
        with super().transaction(write=write) as tx:
            yield tx
            if write and tx.one("SELECT 1 FROM files WHERE filename = ?", (self.filename,)):
                self.reached.set()
                assert self.release.wait(30), "never released"


def post_upload(url: str, path: str, name: str, version: str) -> requests.Response:
    form = wheel_upload_fields(path, name, version)
    with open(path, "rb") as f:
        return requests.post(
            url + "/legacy/",
            data=form,
            files={"content": (os.path.basename(path), f)},
            auth=("alice", PASSWORD),
            timeout=30,
        )


def test_out_of_order_commits_are_never_missed(postgres_server, tmp_path):
    url = postgres_server.new_database()
    data_dir = str(tmp_path / "data")
    config = write_config(
        str(tmp_path / "config.ini"),
        {
            "server": {"data_dir": data_dir, "workers": "2", "threads": "2"},
            "database": {"url": url},
            "storage": {"backend": "local"},
        },
    )
    cloudpypi("adduser", "alice", "--password-stdin", config=config, stdin=PASSWORD + "\n")
    server = start_server(config)
    rpc = xmlrpc.client.ServerProxy(server.url + "/pypi")
    first = make_wheel(str(tmp_path), "held-first", "1.0")
    second = make_wheel(str(tmp_path), "quick-second", "1.0")
    held = HeldCommit(url, "held_first-1.0-py3-none-any.whl")
    app = make_app(
        build(
            {"server": {"data_dir": data_dir}, "database": {"url": url}, "storage": {"backend": "local"}},
            base_dir=str(tmp_path),
        ),
        db=held,
    )
    answers: list[int] = []
    uploader = threading.Thread(
        target=lambda: answers.append(
            upload(
                webtest.TestApp(app), first, name="held-first", version="1.0", password=PASSWORD
            ).status_int
        )
    )
    try:
        assert post_upload(server.url, make_wheel(str(tmp_path), "base", "1.0"), "base", "1.0").ok
        uploader.start()
        assert held.reached.wait(30)
        r = post_upload(server.url, second, "quick-second", "1.0")
        assert r.status_code == 200, r.text
        seen = rpc.changelog_last_serial()
        for _ in range(10):  # every worker renders and caches /simple/ at serial `seen`
            page = requests.get(server.url + "/simple/", timeout=10)
            assert "quick-second" in page.text and "held-first" not in page.text
        held.release.set()
        uploader.join(30)
        assert answers == [200]

        changed = {
            (name, action.split(" ")[0]) for name, _, _, action, *_ in rpc.changelog_since_serial(seen)
        }
        assert ("held-first", "add") in changed, changed
        for _ in range(10):
            assert "held-first" in requests.get(server.url + "/simple/", timeout=10).text
            project = requests.get(server.url + "/simple/held-first/", timeout=10)
            assert "held_first-1.0-py3-none-any.whl" in project.text
            assert int(project.headers["X-PyPI-Last-Serial"]) > seen
        assert rpc.changelog_last_serial() > seen
        serials = [row[4] for row in rpc.changelog_since_serial(0)]
        assert serials == sorted(serials) and len(set(serials)) == len(serials)
    finally:
        held.release.set()
        uploader.join(30) if uploader.is_alive() else None
        held.close()
        server.stop()
