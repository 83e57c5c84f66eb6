"""The WSGI entry point for other servers, e.g. gunicorn::

    CLOUDPYPI_CONFIG=/etc/cloudpypi.ini gunicorn -c python:pypi.server.gunicorn_conf pypi.wsgi:application

Reads the configuration from $CLOUDPYPI_CONFIG (and CLOUDPYPI_* variables),
migrates the schema and checks storage once at import. The purge worker runs
beside the workers, never in them: with ``pypi.server.gunicorn_conf`` the
gunicorn master keeps one; without it, run ``cloudpypi purge-worker`` and set
``[cdn] purge_thread = false``, or this module refuses to load (CDN pages
would otherwise stay stale for a day).
"""

from __future__ import annotations

from pypi import config as config_mod
from pypi.commands.serve import build_app
from pypi.config import ConfigError
from pypi.server import purge_process
from pypi.server.memory import tune_malloc

NO_PURGE_WORKER = (
    "[cdn] purge = {purge}, but no purge worker runs: start gunicorn with "
    "-c python:pypi.server.gunicorn_conf (its master keeps one), or run `cloudpypi purge-worker` "
    "separately and set [cdn] purge_thread = false"
)


def load() -> object:
    """The application; ConfigError when a purger is configured that nothing would deliver to."""
    config = config_mod.load()
    if config.cdn.purge != "none" and purge_process.wanted(config) and not purge_process.MANAGED:
        raise ConfigError(NO_PURGE_WORKER.format(purge=config.cdn.purge))
    tune_malloc()
    return build_app(config, after_commit=purge_process.wake)


application = load()
