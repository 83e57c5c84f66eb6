"""``cloudpypi purge-worker`` and ``cloudpypi purge``: deliver, inspect and send CDN purges."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from cdn import purge as cdn_purge
from pypi.commands.common import add_config_option, fail, load_config, open_database
from pypi.config import Config, ConfigError
from pypi.index import cache_keys, outbox
from pypi.index.db import Database
from pypi.operations import purge_worker
from pypi.server import orphan

#: ``purge --status`` exits 1 when a row has failed this often (a CDN that keeps refusing).
FAIL_AFTER = 5


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("purge-worker", help="deliver queued CDN purges until stopped (SIGTERM/SIGINT)")
    add_config_option(p)
    p.add_argument("--wake-fd", type=int, help=argparse.SUPPRESS)  # from pypi.server.purge_process
    # From pypi.server.purge_process: stop when that process (the gunicorn master) dies.
    p.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    p.set_defaults(func=run_worker)

    p = sub.add_parser("purge", help="show queued CDN purges (--status) or purge surrogate keys by hand")
    p.add_argument("keys", nargs="*", metavar="KEY", help="surrogate keys, e.g. project/NAME, index, recent")
    add_config_option(p)
    p.add_argument("--status", action="store_true", help="list purges that are pending or failing")
    p.add_argument(
        "--fail-after",
        type=int,
        default=FAIL_AFTER,
        metavar="N",
        help=f"with --status: exit 1 if a purge has failed N times (default {FAIL_AFTER})",
    )
    p.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="PATH",
        help="URL path to invalidate too (path-based CDNs such as CloudFront); repeatable",
    )
    p.add_argument(
        "--queue",
        action="store_true",
        help="queue the keys in the outbox for the worker instead of purging now",
    )
    p.set_defaults(func=purge)


def open_purger(config: Config) -> cdn_purge.Purger:
    """The configured purger; a bad ``[cdn]`` setting becomes a ConfigError."""
    try:
        return cdn_purge.from_config(config.cdn.options)
    except (cdn_purge.PurgerMisconfigured, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def open_worker(config: Config, db: Database) -> purge_worker.PurgeWorker:
    """A worker on ``db`` with the configured purger and pacing."""
    try:
        settings = purge_worker.WorkerSettings.from_config(config.cdn.options)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return purge_worker.PurgeWorker(db, open_purger(config), settings)


def run_worker(args: argparse.Namespace) -> int:
    config = load_config(args)
    worker = open_worker(config, open_database(config))

    def stop(signum, frame) -> None:
        worker.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if getattr(args, "parent_pid", None) is not None:
        orphan.watch_parent(args.parent_pid, worker.request_stop)
    if getattr(args, "wake_fd", None) is not None:
        threading.Thread(target=_wake_on_read, args=(args.wake_fd, worker), daemon=True).start()
    print(f"purge worker: delivering through {worker.purger.describe()}", file=sys.stderr, flush=True)
    worker.run()
    worker.purger.close()
    return 0


def _wake_on_read(fd: int, worker: purge_worker.PurgeWorker) -> None:
    """Wake ``worker`` whenever a byte arrives on ``fd`` (a commit in a server worker)."""
    while os.read(fd, 4096):
        worker.wake()


def purge(args: argparse.Namespace) -> int:
    config = load_config(args)
    if args.status:
        if args.keys:
            return fail("--status takes no keys")
        return show_status(open_database(config), args.fail_after)
    if not args.keys:
        return fail("name the surrogate keys to purge (or use --status)")
    paths = {key: [*cache_keys.key_paths(key), *args.path] for key in args.keys}
    if args.queue:
        db = open_database(config)
        with db.transaction(write=True) as tx:
            outbox.enqueue(tx, paths)
        print(f"queued {len(paths)} purge(s) for the worker")
        return 0
    purger = open_purger(config)
    try:
        purger.purge(list(paths), [p for ps in paths.values() for p in ps])
    except cdn_purge.PurgeError as exc:
        return fail(f"purge failed: {exc}")
    finally:
        purger.close()
    print(f"purged {' '.join(paths)} through {purger.describe()}")
    return 0


def show_status(db: Database, fail_after: int) -> int:
    """Print pending and failing rows; 1 if any has failed ``fail_after`` times or more."""
    rows = purge_worker.pending(db)
    if not rows:
        print("no purges pending")
        return 0
    print(f"{len(rows)} purge(s) pending")
    print(f"{'KEY':40} {'ATTEMPTS':>8}  {'NEXT ATTEMPT':27} LAST ERROR")
    for row in rows:
        print(f"{row['purge_key']:40} {row['attempts']:>8}  {row['next_attempt']:27} {row['last_error']}")
    failing = [r for r in rows if r["attempts"] >= fail_after]
    if failing:
        print(f"{len(failing)} purge(s) failed {fail_after} times or more", file=sys.stderr)
        return 1
    return 0
