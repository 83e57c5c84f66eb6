"""Several worker processes answer alike: page caches are keyed by the database's serial.

pypiserver's per-process listing cache served a just-uploaded project in only
some of the requests under 4 workers; here every request must see it.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest

from tests.dists import make_wheel
from tests.e2e.clients import PASSWORD
from tests.services.live_server import cloudpypi, start_server, write_config

pytestmark = pytest.mark.e2e


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_every_worker_sees_a_new_upload_at_once(database, tmp_path, request):
    url = (
        f"sqlite:///{tmp_path}/index.sqlite3"
        if database == "sqlite"
        else request.getfixturevalue("postgres_server").new_database()
    )
    config = write_config(
        str(tmp_path / "config.ini"),
        {
            "server": {"data_dir": str(tmp_path / "data"), "workers": "4", "threads": "4"},
            "database": {"url": url},
        },
    )
    cloudpypi("adduser", "alice", "--password-stdin", config=config, stdin=PASSWORD + "\n")
    server = start_server(config)
    try:

        def twine(path: str) -> None:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "twine",
                    "upload",
                    "--disable-progress-bar",
                    "--repository-url",
                    server.url + "/legacy/",
                    "-u",
                    "alice",
                    "-p",
                    PASSWORD,
                    path,
                ],
                check=True,
                capture_output=True,
            )

        twine(make_wheel(str(tmp_path), "multi", "1.0"))
        for _ in range(40):  # warm every worker's cache with the old page
            assert "multi-1.0-py3-none-any.whl" in get(server.url + "/simple/multi/")
            assert "multi" in get(server.url + "/simple/")
        twine(make_wheel(str(tmp_path), "multi", "2.0"))
        twine(make_wheel(str(tmp_path), "brand-new", "1.0"))
        pages = [get(server.url + "/simple/multi/") for _ in range(20)]
        assert sum("multi-2.0-py3-none-any.whl" in p for p in pages) == 20
        indexes = [get(server.url + "/simple/") for _ in range(20)]
        assert sum("brand-new" in p for p in indexes) == 20
        assert "4 worker processes" in server.log()
    finally:
        server.stop()
