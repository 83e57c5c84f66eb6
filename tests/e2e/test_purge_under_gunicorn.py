"""Behind a CDN, an upload's purge is sent exactly once per host, whichever worker took the
upload: by the one purge worker the gunicorn master keeps (``cloudpypi serve``, or gunicorn's
own command with ``-c python:pypi.server.gunicorn_conf``); plain ``gunicorn pypi.wsgi:application``
refuses to start rather than leave pages stale."""

from __future__ import annotations

import collections
import http.server
import os
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from tests.dists import make_wheel
from tests.e2e.clients import PASSWORD
from tests.e2e.test_gunicorn_serve import auth_header, upload_form
from tests.services.live_server import ROOT, cloudpypi, free_port, start_server, write_config

pytestmark = pytest.mark.e2e


class FakeVarnish:
    """An HTTP endpoint that records the xkey header of every PURGE it gets."""

    def __init__(self) -> None:
        self.keys: collections.Counter[str] = collections.Counter()
        seen = self.keys

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PURGE(self) -> None:  # noqa: N802 (the HTTP method's name)
                for key in (self.headers.get("xkey") or "").split():
                    seen[key] += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def varnish():
    fake = FakeVarnish()
    yield fake
    fake.close()


def index_config(tmp_path, varnish: FakeVarnish) -> str:
    config = write_config(
        str(tmp_path / "config.ini"),
        {
            "server": {"data_dir": str(tmp_path / "data"), "workers": "2", "threads": "2"},
            "database": {"url": f"sqlite:///{tmp_path}/index.sqlite3"},
            "cdn": {"purge": "varnish", "varnish_urls": varnish.url, "purge_poll_interval": "30"},
        },
    )
    cloudpypi("adduser", "alice", "--password-stdin", config=config, stdin=PASSWORD + "\n")
    return config


def upload_and_count(url: str, tmp_path, varnish: FakeVarnish, name: str) -> None:
    wheel = make_wheel(str(tmp_path), name, "1.0")
    content_type, body = upload_form(wheel, name, "1.0")
    request = urllib.request.Request(
        url + "/legacy/",
        data=body,
        method="POST",
        headers={"Content-Type": content_type, "Authorization": auth_header()},
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        assert r.status == 200
    key = f"project/{name}"
    deadline = time.monotonic() + 10  # polls are 30 s apart: only the worker's wake-up is this quick
    while varnish.keys[key] == 0:
        assert time.monotonic() < deadline, f"no purge of {key}: {dict(varnish.keys)}"
        time.sleep(0.05)
    time.sleep(2.0)  # room for a second sender, if there were one
    assert varnish.keys[key] == 1, dict(varnish.keys)
    assert varnish.keys["index"] == 1, dict(varnish.keys)


def test_serve_with_two_workers_purges_once(tmp_path, varnish):
    server = start_server(index_config(tmp_path, varnish))
    try:
        upload_and_count(server.url, tmp_path, varnish, "purged-once")
        assert "purge worker: process" in server.log()
    finally:
        server.stop()


def gunicorn(config: str, *args: str) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    log = config + f".gunicorn.{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", *args, "-b", f"127.0.0.1:{port}", "pypi.wsgi:application"],
        cwd=ROOT,
        env={**os.environ, "CLOUDPYPI_CONFIG": config},
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )
    return proc, f"http://127.0.0.1:{port}", log


def test_plain_gunicorn_with_the_config_module_purges_once(tmp_path, varnish):
    config = index_config(tmp_path, varnish)
    proc, url, log = gunicorn(config, "-c", "python:pypi.server.gunicorn_conf")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/simple/", timeout=2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, open(log).read()
                time.sleep(0.1)
        upload_and_count(url, tmp_path, varnish, "gunicorn-purged")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_plain_gunicorn_without_a_purge_worker_refuses_to_start(tmp_path, varnish):
    config = index_config(tmp_path, varnish)
    proc, _, log = gunicorn(config, "-w", "1")
    try:
        assert proc.wait(timeout=60) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = open(log).read()
    assert "no purge worker runs" in text and "pypi.server.gunicorn_conf" in text, text[-2000:]


def _children(pid: int) -> dict[int, str]:
    """The live children of ``pid``: their pids and command lines."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry)] = cmdline
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for init to reap it does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the process table from /proc")
def test_serve_killed_with_sigkill_leaves_no_purge_worker_or_server_worker(tmp_path, varnish):
    server = start_server(index_config(tmp_path, varnish))
    children: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 30
        while True:  # the purge worker starts when the master is ready, the workers as they boot
            children = _children(server.proc.pid)
            purgers = [p for p, cmd in children.items() if "purge-worker" in cmd]
            if purgers and len(children) >= 3:  # the purge worker and the two server workers
                break
            assert time.monotonic() < deadline, children
            time.sleep(0.1)
        server.proc.kill()  # SIGKILL: the master runs no exit hook
        server.proc.wait()
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in children):
            left = {p: cmd for p, cmd in children.items() if _alive(p)}
            assert time.monotonic() < deadline, f"still running after the master died: {left}"
            time.sleep(0.1)
    finally:
        server.stop()
        for pid in children:  # what a failure left behind (they are no longer the master's)
            if _alive(pid):
                os.kill(pid, 9)
