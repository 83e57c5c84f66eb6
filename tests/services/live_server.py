"""Runs ``cloudpypi serve`` as a real process on 127.0.0.1 for end-to-end tests."""

from __future__ import annotations

import configparser
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

import pytest

CLOUDPYPI = [sys.executable, "-m", "pypi.cli"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float) -> float:
    """Poll ``check()`` until true; the seconds it took. Fails after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - started


def write_config(path: str, sections: Mapping[str, Mapping[str, str]]) -> str:
    parser = configparser.ConfigParser(interpolation=None)
    for section, values in sections.items():
        parser[section] = {k: str(v) for k, v in values.items()}
    with open(path, "w") as f:
        parser.write(f)
    return path


def cloudpypi(
    *args: str,
    config: str,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run a ``cloudpypi`` sub-command against ``config``."""
    return subprocess.run(
        [*CLOUDPYPI, *args, "--config", config],
        input=stdin,
        capture_output=True,
        text=True,
        check=check,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


@dataclass
class LiveServer:
    url: str
    config: str
    proc: subprocess.Popen
    log_path: str

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(
    config: str, *, port: int | None = None, env: Mapping[str, str] | None = None, timeout: float = 30
) -> LiveServer:
    """Start ``cloudpypi serve --config CONFIG`` and wait until it answers."""
    port = port or free_port()
    log_path = config + f".{port}.log"
    proc = subprocess.Popen(
        [*CLOUDPYPI, "serve", "--config", config, "--host", "127.0.0.1", "--port", str(port)],
        stdout=open(log_path, "wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/simple/", timeout=2):
                break
        except urllib.error.HTTPError:
            break  # it answers (401 on an index under [access] read = authenticated)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                tail = open(log_path).read()[-3000:]
                raise RuntimeError(f"cloudpypi serve did not start:\n{tail}") from None
            time.sleep(0.1)
    return LiveServer(url, config, proc, log_path)
