"""``cloudpypi mirror``: bring the index in line with ``[upstream]`` once, then exit."""

from __future__ import annotations

import argparse
import os
import sys

from pypi.commands.common import add_config_option, fail, load_config, open_database, open_storage
from pypi.config import ConfigError
from pypi.upstream.sync import Mirror


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mirror",
        help="mirror [upstream] url into this index's storage (one run, then exit)",
        description="List upstream's projects (XML-RPC serials when offered, else PEP 691 / PEP 503 "
        "/simple/), download the files this index lacks, verify each against upstream's sha256, store "
        "it and its .metadata, commit the rows and queue CDN purges; follow yanks and removals. Exits "
        "0 when everything is in sync, 1 with a summary naming what failed (e.g. a hash mismatch).",
    )
    add_config_option(p)
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="projects synced at once, each by its own worker process (default: [upstream] jobs, 4)",
    )
    p.add_argument("--dry-run", action="store_true", help="report what would change; change nothing")
    p.add_argument("--quiet", action="store_true", help="no progress lines, only the summary")
    p.set_defaults(func=mirror)


def mirror(args: argparse.Namespace) -> int:
    config = load_config(args)
    settings = config.upstream
    if not settings.url:
        raise ConfigError("[upstream] url: required for cloudpypi mirror")
    if settings.mode == "proxy":
        return fail("[upstream] mode is proxy: set mode = mirror to run cloudpypi mirror")
    db = open_database(config)
    store = open_storage(config)
    tty = sys.stderr.isatty()

    def progress(line: str) -> None:
        if args.quiet:
            return
        if tty:
            sys.stderr.write("\r\x1b[K" + line[:150])
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    jobs = args.jobs or settings.jobs
    try:
        engine = Mirror(
            db,
            store,
            settings,
            tmp_dir=os.path.join(config.data_dir, "tmp"),
            jobs=jobs,
            dry_run=args.dry_run,
            progress=progress,
            processes=jobs,  # a worker process per job (see Mirror._sync_in_processes)
            open_store=lambda: open_storage(config, check=False),
        )
        report = engine.run()
        if tty and not args.quiet:
            sys.stderr.write("\n")
        if not args.dry_run and config.cdn.purge != "none":
            from pypi.commands.purge import open_worker

            delivered = open_worker(config, db).deliver_all()
            print(
                f"CDN purges: {delivered.sent} sent, {delivered.failed} failed (retried by the purge worker)"
            )
    finally:
        store.close()
        db.close()
    print(report.summary())
    return 0 if report.ok else 1
