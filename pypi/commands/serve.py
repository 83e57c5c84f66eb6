"""``cloudpypi serve``: migrate the schema and run the index under waitress."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

from cdn.purge import PurgerMisconfigured, flag
from pypi.app import make_app
from pypi.commands.common import add_config_option, load_config, open_database, open_storage
from pypi.commands.purge import open_worker
from pypi.config import Config, ConfigError
from pypi.index.db import Database
from pypi.operations import leftovers
from pypi.operations.purge_worker import PurgeWorker
from pypi.server import prefork
from pypi.server.memory import tune_malloc

log = logging.getLogger("cloudpypi")
#: Room for the form's text fields around the largest file.
BODY_OVERHEAD = 16 * 1024 * 1024


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the index (creates or migrates the schema first)")
    add_config_option(p)
    p.add_argument("--host", help="address to listen on (default: [server] host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default: [server] port, 8080)")
    p.add_argument("--threads", type=int, help="threads per worker process (default: [server] threads, 8)")
    p.add_argument("--workers", type=int, help="worker processes (default: [server] workers, 1)")
    p.set_defaults(func=serve)


def build_app(config: Config, *, after_commit: Callable[[], None] | None = None):
    """Everything ``serve`` runs, ready: schema migrated, storage checked, crashed uploads'
    leftovers being cleaned (on a background thread)."""
    db = open_database(config)
    store = open_storage(config)
    leftovers.clean_in_background(
        store, leftovers.spool_dir(config.data_dir), config.server.temporaries_max_age
    )
    return make_app(config, store=store, db=db, after_commit=after_commit)


def purge_thread(config: Config) -> PurgeWorker | None:
    """The purge worker ``serve`` runs in a thread (not started yet).

    None with ``[cdn] purge_thread = false`` (a separate ``cloudpypi purge-worker`` delivers).
    """
    try:
        wanted = flag(config.cdn.options, "purge_thread", True)
    except PurgerMisconfigured as exc:
        raise ConfigError(str(exc)) from None
    return open_worker(config, Database(config.database.url, pool_size=2)) if wanted else None


def serve(args: argparse.Namespace) -> int:
    config = load_config(args)
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    threads = args.threads or config.server.threads
    workers = args.workers or config.server.workers
    # Fail fast, before any worker starts: schema migrated, storage reachable, purger valid.
    open_database(config).close()
    open_storage(config).close()
    purge_thread(config)

    def build():
        """One worker's application, with its own purge thread (called after fork)."""
        tune_malloc()  # before any server thread exists
        worker = purge_thread(config)
        app = build_app(config, after_commit=worker.wake if worker else None)
        if worker:
            worker.start()
            log.info("purge worker: %s", worker.purger.describe())
        return app

    log.info(
        "CloudPyPI on http://%s:%s/ (%d worker%s x %d threads; database %s, storage %s, %s)",
        host,
        port,
        workers,
        "s" if workers > 1 else "",
        threads,
        config.database.url.split(":", 1)[0],
        config.storage.backend,
        f"files via {config.cdn.files_url}" if config.cdn.files_url else "files served here",
    )
    return prefork.run(
        build,
        host=host,
        port=port,
        workers=workers,
        threads=threads,
        max_request_body_size=config.webui.max_upload_size + BODY_OVERHEAD,
        ident="CloudPyPI",
        clear_untrusted_proxy_headers=True,
    )
