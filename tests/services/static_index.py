"""A static PEP 503 tree (as bandersnatch writes it) served by ``python -m http.server``:
an upstream index that is not CloudPyPI, for the mirror and proxy tests."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.services.live_server import free_port


def write_static_tree(root: Path, projects: dict[str, list[tuple[str, bytes, dict]]]) -> None:
    """A PEP 503 tree as bandersnatch writes it: simple/<name>/index.html, packages/<file>."""
    (root / "packages").mkdir(parents=True, exist_ok=True)
    index = []
    for name, files in projects.items():
        (root / "simple" / name).mkdir(parents=True, exist_ok=True)
        links = []
        for filename, data, attrs in files:
            (root / "packages" / filename).write_bytes(data)
            sha = attrs.pop("sha256", None) or hashlib.sha256(data).hexdigest()
            extra = " ".join(f'{k}="{v}"' for k, v in attrs.items())
            links.append(f'<a href="../../packages/{filename}#sha256={sha}" {extra}>{filename}</a><br/>')
        (root / "simple" / name / "index.html").write_text(
            f"<!DOCTYPE html><html><body><h1>Links for {name}</h1>{''.join(links)}</body></html>"
        )
        index.append(f'<a href="{name}/">{name}</a>')
    (root / "simple" / "index.html").write_text(f"<html><body>{''.join(index)}</body></html>")


class StaticServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/simple/"
        self.proc: subprocess.Popen | None = None

    def start(self) -> StaticServer:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "http.server",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--directory",
                str(self.root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url, timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("http.server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
