"""The WSGI entry point for other servers, e.g. ``gunicorn 'pypi.wsgi:application'``.

Reads the configuration from $CLOUDPYPI_CONFIG (and CLOUDPYPI_* variables),
migrates the schema and checks storage once at import.
"""

from __future__ import annotations

from pypi import config as config_mod
from pypi.commands.serve import build_app
from pypi.server.memory import tune_malloc

tune_malloc()
application = build_app(config_mod.load())
