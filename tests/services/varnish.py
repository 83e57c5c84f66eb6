"""A real Varnish (Debian's varnish + varnish-modules) with the shipped VCL, in front of a backend.

``start_varnish(backend_host, backend_port)`` works outside pytest too (the
benchmarks use it): it writes a copy of ``cdn/varnish/cloudpypi.vcl`` with
that backend, compiles it first (``varnishd -C``, errors shown as the
compiler prints them), and starts ``varnishd -F`` on free ports in a working
folder of its own. ``Varnish.stop()`` stops it by the PID it started;
``Varnish.start()`` starts it again on the same port (with an empty cache).

The pytest fixture ``varnish_factory`` (module scope; registered through
``pytest_plugins`` in tests/conftest.py) returns that function and removes
whatever it started when the module's tests are done.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VCL = os.path.join(ROOT, "cdn", "varnish", "cloudpypi.vcl")


class VarnishError(RuntimeError):
    """Varnish is missing, its VCL does not compile, or it did not start."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def varnishd() -> str:
    path = shutil.which("varnishd") or shutil.which("varnishd", path="/usr/sbin")
    if not path:
        raise VarnishError("varnishd is not installed: run scripts/install-test-deps")
    return path


def vcl_with_backend(source: str, host: str, port: int) -> str:
    """The VCL text with the ``backend default`` block's host and port replaced."""
    block = re.search(r"backend default \{.*?\n\}", source, re.S)
    if not block:
        raise VarnishError("the VCL has no 'backend default { ... }' block")
    new = re.sub(r'\.host = "[^"]*";', f'.host = "{host}";', block.group(0))
    new = re.sub(r'\.port = "[^"]*";', f'.port = "{port}";', new)
    return source[: block.start()] + new + source[block.end() :]


def _open_dir(prefix: str) -> str:
    """A fresh folder the varnish users can enter (mkdtemp's are 0700)."""
    folder = tempfile.mkdtemp(prefix=prefix)
    os.chmod(folder, 0o755)
    return folder


def compile_check(vcl_path: str, workdir: str) -> None:
    """Compile the VCL with ``varnishd -C``; VarnishError with the compiler's message if it fails."""
    proc = subprocess.run(
        [varnishd(), "-C", "-n", workdir, "-f", vcl_path], capture_output=True, text=True, errors="replace"
    )
    if proc.returncode != 0:
        noise = ("Could not delete", "Could not rmdir")
        lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith(noise)]
        raise VarnishError(f"VCL {vcl_path} does not compile:\n" + "\n".join(lines[-40:]))


def check_source(source: str) -> None:
    """Compile-check VCL text (written to a folder the varnish users can read); VarnishError if bad."""
    folder = _open_dir("cloudpypi-vcc-")
    try:
        path = os.path.join(folder, "check.vcl")
        with open(path, "w", encoding="utf-8") as f:
            f.write(source)
        os.chmod(path, 0o644)
        compile_check(path, os.path.join(folder, "n"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _state(pid: int) -> str | None:
    """The process state letter from /proc, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    """A zombie (state Z) counts as dead: PID 1 may take seconds to reap it."""
    return _state(pid) not in (None, "Z", "X")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Varnish:
    """One varnishd; ``url`` ends without a slash."""

    backend_host: str
    backend_port: int
    port: int
    workdir: str
    vcl_path: str
    admin_port: int = 0
    proc: subprocess.Popen | None = None
    log_path: str = ""
    child_pids: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Varnish:
        """Start varnishd (again) on ``port``; returns once it answers HTTP."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.admin_port = free_port()
        self.log_path = os.path.join(os.path.dirname(self.workdir), "varnishd.log")
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the process
        self.proc = subprocess.Popen(
            [
                varnishd(),
                "-F",
                "-n",
                self.workdir,
                "-a",
                f"127.0.0.1:{self.port}",
                "-T",
                f"127.0.0.1:{self.admin_port}",
                "-f",
                self.vcl_path,
                "-s",
                "malloc,64m",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise VarnishError(f"varnishd exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if self._http_ready():
                break
            if time.monotonic() > deadline:
                self.stop()
                raise VarnishError(f"varnishd did not answer on port {self.port}:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        self.child_pids = self._children()
        return self

    def _http_ready(self) -> bool:
        request = urllib.request.Request(self.url + "/", method="PURGE", headers={"xkey": "cloudpypi-ready"})
        try:
            with urllib.request.urlopen(request, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def _children(self) -> list[int]:
        pid = self.proc.pid if self.proc else 0
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            return []

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the varnishd this object started (by PID) and wait until its port is free."""
        if self.proc is None:
            return
        pids = [self.proc.pid, *self._children(), *self.child_pids]
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        deadline = time.monotonic() + timeout
        while any(_alive(p) for p in pids) or _answers(self.port):
            if time.monotonic() > deadline:
                for p in pids:
                    if _alive(p):
                        os.kill(p, signal.SIGKILL)
                break
            time.sleep(0.05)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stats(self) -> dict[str, int]:
        """Counters from ``varnishstat`` (e.g. ``MAIN.backend_req``, ``MAIN.cache_hit``)."""
        proc = subprocess.run(
            ["varnishstat", "-n", self.workdir, "-1", "-j"], capture_output=True, text=True, timeout=30
        )
        if proc.returncode != 0:
            raise VarnishError(f"varnishstat failed: {proc.stderr.strip()}")
        data = json.loads(proc.stdout)
        counters = data.get("counters", data)
        return {k: int(v["value"]) for k, v in counters.items() if isinstance(v, dict) and "value" in v}

    def backend_requests(self) -> int:
        """How many requests Varnish has sent to the application since it started.

        Read from the backends' own ``VBE.*.req`` counters, which are exact at
        once; ``MAIN.backend_req`` is summed from busy worker threads with a lag.
        """
        return sum(v for k, v in self.stats().items() if k.startswith("VBE.") and k.endswith(".req"))

    def remove(self) -> None:
        """Stop, and delete the working folder."""
        self.stop()
        shutil.rmtree(os.path.dirname(self.workdir), ignore_errors=True)


def start_varnish(
    backend_host: str, backend_port: int, *, port: int | None = None, vcl: str = VCL
) -> Varnish:
    """Compile-check ``vcl`` aimed at the backend, then start a Varnish on ``port`` (default: free)."""
    folder = _open_dir("cloudpypi-varnish-")
    workdir = os.path.join(folder, "n")
    vcl_path = os.path.join(folder, "cloudpypi.vcl")
    with open(vcl, encoding="utf-8") as f:
        source = vcl_with_backend(f.read(), backend_host, backend_port)
    with open(vcl_path, "w", encoding="utf-8") as f:
        f.write(source)
    os.chmod(vcl_path, 0o644)
    try:
        compile_check(vcl_path, os.path.join(folder, "compile"))
        instance = Varnish(backend_host, backend_port, port or free_port(), workdir, vcl_path)
        return instance.start()
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


@pytest.fixture(scope="module")
def varnish_factory() -> Iterator:
    """``factory(backend_host, backend_port, port=None) -> Varnish``; all stopped at the module's end."""
    started: list[Varnish] = []

    def factory(backend_host: str, backend_port: int, *, port: int | None = None) -> Varnish:
        instance = start_varnish(backend_host, backend_port, port=port)
        started.append(instance)
        return instance

    yield factory
    for instance in started:
        instance.remove()
