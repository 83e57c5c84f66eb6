"""A real PostgreSQL for the tests.

Uses the server on 127.0.0.1:5432 (user postgres, trust auth) when one
answers, or $CLOUDPYPI_TEST_POSTGRES_URL when set; otherwise starts a
throwaway cluster with Debian's postgresql binaries (as the postgres user,
since initdb refuses root) and stops it at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass

import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> str:
    root = "/usr/lib/postgresql"
    if os.path.isdir(root):
        for version in sorted(os.listdir(root), reverse=True):
            candidate = os.path.join(root, version, "bin")
            if os.path.exists(os.path.join(candidate, "initdb")):
                return candidate
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(found)
    raise RuntimeError("PostgreSQL is not installed: run scripts/install-test-deps")


@dataclass
class PostgresServer:
    """A server and the admin URL to it; ``new_database`` makes an empty database."""

    admin_url: str
    _proc: subprocess.Popen | None = None
    _dir: str | None = None

    def new_database(self) -> str:
        import psycopg2

        name = "cloudpypi_test_" + uuid.uuid4().hex[:10]
        conn = psycopg2.connect(self.admin_url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.admin_url.rsplit("/", 1)[0] + "/" + name

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """A reachable PostgreSQL: the configured or local one, else a throwaway cluster."""
    url = os.environ.get("CLOUDPYPI_TEST_POSTGRES_URL")
    if url:
        return PostgresServer(url)
    if _answers("127.0.0.1", 5432):
        return PostgresServer(DEFAULT_URL)
    bindir = _pg_bin()
    folder = tempfile.mkdtemp(prefix="cloudpypi-pg-")
    os.chmod(folder, 0o777)
    data = os.path.join(folder, "data")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run(
        [
            *as_postgres,
            os.path.join(bindir, "initdb"),
            "-D",
            data,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ],
        check=True,
        cwd="/",
        stdout=subprocess.DEVNULL,
    )
    port = _free_port()
    proc = subprocess.Popen(
        [
            *as_postgres,
            os.path.join(bindir, "postgres"),
            "-D",
            data,
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={folder}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ],
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(folder, "log"), "wb"),
    )
    deadline = time.monotonic() + 30
    while not _answers("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            log = open(os.path.join(folder, "log"), errors="replace").read()[-2000:]
            raise RuntimeError(f"PostgreSQL did not start:\n{log}")
        time.sleep(0.1)
    time.sleep(0.3)
    return PostgresServer(f"postgresql://postgres@127.0.0.1:{port}/postgres", proc, folder)


@pytest.fixture(scope="session")
def postgres_server():
    server = start_postgres()
    yield server
    server.stop()
