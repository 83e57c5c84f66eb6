"""``[server]`` settings become gunicorn's: workers default to the machine's cores."""

from __future__ import annotations

import os

from pypi.config import build
from pypi.server.application import gunicorn_settings


def test_default_serves_with_one_worker_per_core_and_graceful_stop(tmp_path):
    config = build({}, base_dir=str(tmp_path))
    settings = gunicorn_settings(config)
    assert settings["workers"] == os.cpu_count()
    assert settings["threads"] == 8
    assert settings["worker_class"] == "pypi.server.worker.Worker"
    assert settings["graceful_timeout"] == 120
    assert settings["bind"] == ["127.0.0.1:8080"]


def test_server_keys_and_command_line_overrides(tmp_path):
    raw = {"server": {"workers": "3", "threads": "2", "graceful_timeout": "600", "host": "::1"}}
    config = build(raw, base_dir=str(tmp_path))
    assert gunicorn_settings(config)["graceful_timeout"] == 600
    settings = gunicorn_settings(config, port=9000, workers=5)
    assert (settings["workers"], settings["threads"], settings["bind"]) == (5, 2, ["[::1]:9000"])
