"""A gunicorn configuration for running ``pypi.wsgi:application`` with gunicorn's own command::

    CLOUDPYPI_CONFIG=/etc/cloudpypi.ini gunicorn -c python:pypi.server.gunicorn_conf pypi.wsgi:application

It gives what ``cloudpypi serve`` runs: the CloudPyPI worker class, ``[server]``
host, port, workers, threads, graceful_timeout and keepalive (options on
gunicorn's command line still win), and one purge worker process beside the
workers, kept by the master (unless ``[cdn] purge_thread = false``, for a
separate ``cloudpypi purge-worker``). The master migrates the schema and stores the
whole-index pages before the workers start (``on_starting``).
"""

from __future__ import annotations

import os

from pypi import config as _config
from pypi.server import purge_process as _purge_process
from pypi.server.application import gunicorn_settings as _settings

_cfg = _config.load()
globals().update(_settings(_cfg))


def on_starting(server) -> None:
    """In the master, before any worker: the schema migrated and the whole-index pages stored,
    as ``cloudpypi serve`` does (no request builds them)."""
    from pypi.commands.common import open_database, prepare_whole_index

    db = open_database(_cfg)
    try:
        prepare_whole_index(db)
    finally:
        db.close()


globals().update(
    _purge_process.hooks(os.environ.get(_config.ENV_CONFIG) or None, _purge_process.wanted(_cfg))
)
