"""``cloudpypi purge KEY...``, ``purge --status`` and ``purge-worker``, run as real processes."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from pypi.index.db import Database
from pypi.operations.purge_worker import pending
from tests.services.live_server import CLOUDPYPI, ROOT, cloudpypi, write_config


@pytest.fixture
def config(tmp_path, recorder):
    """SQLite, purging through a 'Varnish node' that records what it is sent."""
    return write_config(
        str(tmp_path / "config.ini"),
        {
            "server": {"data_dir": str(tmp_path / "data")},
            "database": {"url": f"sqlite:///{tmp_path}/db.sqlite3"},
            "cdn": {"purge": "varnish", "varnish_urls": recorder.url, "purge_poll_interval": "0.2"},
        },
    )


def outbox(config_path) -> list[dict]:
    url = open(config_path).read().split("url = ", 1)[1].splitlines()[0]
    db = Database(url)
    try:
        return pending(db)
    finally:
        db.close()


def test_purge_by_hand(config, recorder):
    out = cloudpypi("purge", "project/demo", "index", config=config).stdout
    assert "purged project/demo index" in out
    [req] = recorder.requests
    assert (req.method, req.headers["xkey"]) == ("PURGE", "project/demo index")


def test_purge_by_hand_reports_failure(config, recorder):
    recorder.status = 503
    result = cloudpypi("purge", "index", config=config, check=False)
    assert result.returncode == 1
    assert "purge failed" in result.stderr and "503" in result.stderr


def test_queue_status_and_worker(config, recorder):
    cloudpypi("purge", "--queue", "project/demo", "recent", config=config)
    status = cloudpypi("purge", "--status", config=config)
    assert "2 purge(s) pending" in status.stdout and "project/demo" in status.stdout
    assert cloudpypi("purge", "--status", "--fail-after", "0", config=config, check=False).returncode == 1

    worker = subprocess.Popen(
        [*CLOUDPYPI, "purge-worker", "--config", config],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while outbox(config) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert outbox(config) == []
        assert [r.headers["xkey"] for r in recorder.requests] == ["project/demo recent"]
    finally:
        worker.send_signal(signal.SIGTERM)
        output = worker.communicate(timeout=15)[0]
    assert worker.returncode == 0, output
    assert "no purges pending" in cloudpypi("purge", "--status", config=config).stdout


def test_unknown_purger_is_a_configuration_error(tmp_path):
    config = write_config(
        str(tmp_path / "config.ini"),
        {
            "database": {"url": f"sqlite:///{tmp_path}/db.sqlite3"},
            "cdn": {"purge": "akamai"},
        },
    )
    result = cloudpypi("purge", "index", config=config, check=False)
    assert result.returncode == 2
    assert "'akamai' is unknown; known purgers:" in result.stderr and "varnish" in result.stderr
