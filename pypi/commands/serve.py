"""``cloudpypi serve``: migrate the schema and run the index under gunicorn (pypi.server)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable

from pypi import config as config_mod
from pypi.commands.common import (
    add_config_option,
    load_config,
    open_database,
    open_storage,
    prepare_whole_index,
)
from pypi.commands.purge import open_purger
from pypi.config import Config
from pypi.operations import leftovers
from pypi.server import purge_process
from pypi.server.application import Server, gunicorn_settings

log = logging.getLogger("cloudpypi")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the index (creates or migrates the schema first)")
    add_config_option(p)
    p.add_argument("--host", help="address to listen on (default: [server] host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default: [server] port, 8080)")
    p.add_argument("--threads", type=int, help="threads per worker process (default: [server] threads, 8)")
    p.add_argument("--workers", type=int, help="worker processes (default: [server] workers, one per core)")
    p.set_defaults(func=serve)


def build_app(config: Config, *, after_commit: Callable[[], None] | None = None, check: bool = True):
    """Everything ``serve`` runs, ready: schema migrated, storage checked (unless ``check=False``),
    crashed uploads' leftovers being cleaned (on a background thread)."""
    from pypi.app import make_app  # the web app's imports (webob, jinja2, views): only when serving

    db = open_database(config, migrate=check)
    store = open_storage(config, check=check)
    leftovers.clean_in_background(
        store, leftovers.spool_dir(config.data_dir), config.server.temporaries_max_age
    )
    return make_app(config, store=store, db=db, after_commit=after_commit)


def _served_address(config: Config, args: argparse.Namespace) -> Config:
    """The config with the address served: pages link to it (Config.public_url) when
    ``[webui] url`` is empty."""
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    return dataclasses.replace(config, server=dataclasses.replace(config.server, host=host, port=port))


def serve(args: argparse.Namespace) -> int:
    config = _served_address(load_config(args), args)
    # Fail fast, before any worker starts: schema migrated, storage reachable, purger valid.
    db = open_database(config)
    try:
        prepare_whole_index(db)  # built here once, not by the first request that asks
    finally:
        db.close()
    open_storage(config).close()
    open_purger(config).close()
    settings = gunicorn_settings(
        config, host=args.host, port=args.port, workers=args.workers, threads=args.threads
    )
    settings.update(purge_process.hooks(args.config, purge_process.wanted(config)))

    def build():
        """One worker's application, on the settings as they are now (called after the fork).

        Not checked again: a worker started while the store is down (a restart of
        one worker, a reload) answers 503 until it is back, instead of failing to
        boot, which would make gunicorn stop the whole server.
        """
        worker_config = _served_address(config_mod.load(args.config), args)
        return build_app(worker_config, after_commit=purge_process.wake, check=False)

    log.info(
        "CloudPyPI on http://%s/ (%d worker processes x %d threads; database %s, storage %s, %s)",
        settings["bind"][0],
        settings["workers"],
        settings["threads"],
        config.database.url.split(":", 1)[0],
        config.storage.backend,
        f"files via {config.cdn.files_url}" if config.cdn.files_url else "files served here",
    )
    Server(settings, build).run()
    return 0
