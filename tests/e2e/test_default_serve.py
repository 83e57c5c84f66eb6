"""The README's promise: ``cloudpypi serve`` with no config at all runs on SQLite and local
files under ./data, and takes an upload."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.dists import make_wheel
from tests.e2e.clients import PASSWORD, get_json, sha256_of, twine_upload
from tests.services.live_server import free_port

pytestmark = pytest.mark.e2e


def cloudpypi_command() -> list[str]:
    script = Path(sys.executable).parent / "cloudpypi"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pypi.cli"]


def test_serve_with_no_config_uses_sqlite_and_local_files_under_data(tmp_path: Path) -> None:
    cwd = tmp_path / "empty"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDPYPI_")}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*cloudpypi_command(), "serve", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/simple/", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        assert (cwd / "data" / "cloudpypi.sqlite3").is_file(), sorted(os.listdir(cwd))

        def cli(*args: str, stdin: str | None = None) -> str:
            return subprocess.run(
                [*cloudpypi_command(), *args],
                cwd=cwd,
                env=env,
                input=stdin,
                capture_output=True,
                text=True,
                check=True,
            ).stdout

        cli("adduser", "alice", "--password-stdin", stdin=PASSWORD + "\n")
        settings = cli("check-config")
        assert f"url = sqlite:///{cwd / 'data' / 'cloudpypi.sqlite3'}" in settings, settings
        assert "backend = local" in settings, settings

        wheel = Path(make_wheel(str(tmp_path), "Default-Demo", "0.1"))
        twine_upload(url + "/legacy/", wheel, home=tmp_path, check=True)

        stored = [p for p in (cwd / "data" / "packages").rglob(wheel.name) if p.is_file()]
        assert len(stored) == 1, sorted(str(p) for p in (cwd / "data").rglob("*"))
        assert sha256_of(stored[0]) == sha256_of(wheel)
        entry = get_json(f"{url}/pypi/default-demo/json")["urls"][0]
        with urllib.request.urlopen(urllib.request.urljoin(url, entry["url"]), timeout=30) as r:
            assert r.read() == wheel.read_bytes()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
