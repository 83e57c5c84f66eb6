"""``cloudpypi migrate-storage --to OTHER.ini``: copy every package object to another backend.

The copying is ``pypi.operations.copy_objects``'s; this module reads the two configurations,
opens both backends and reports.
"""

from __future__ import annotations

import argparse
import os
import sys

from cdn import policy
from cdn.policy import CachePolicy
from pypi import config as config_mod
from pypi.commands.common import add_config_option, fail, load_config, open_database, open_storage
from pypi.config import Config, ConfigError
from pypi.index.objects import StoredObject
from pypi.index.stream import referenced_objects
from pypi.operations.copy_objects import Failure, Migration, Progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "migrate-storage",
        help="copy every package file and .metadata object to the storage configured in another file",
        description="Copy every object the database references from the configured [storage] "
        "to the [storage] of OTHER.ini. Objects already there with the same size (and, with "
        "--verify, the same SHA-256) are skipped, so the command can be run again after an "
        "interruption. Exits 1 if any object could not be copied.",
    )
    p.add_argument(
        "--to",
        required=True,
        metavar="OTHER.ini",
        help="a config file whose [storage] section names the target (read as it is, "
        "without CLOUDPYPI_* overrides; its [server] data_dir resolves relative paths)",
    )
    add_config_option(p)
    p.add_argument(
        "--jobs", type=_positive, default=4, metavar="N", help="objects copied at once (default 4)"
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="read back objects already in the target and recopy those whose SHA-256 differs",
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be copied; change nothing")
    p.set_defaults(func=migrate_storage)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def load_target(path: str) -> Config:
    """The configuration in ``path``, read without environment overrides."""
    if not os.path.isfile(path):
        raise ConfigError(f"--to {path}: no such file")
    target = config_mod.load(path, environ={})
    if "storage" not in target.raw:
        raise ConfigError(f"--to {path}: the file has no [storage] section")
    return target


def same_store(a: Config, b: Config) -> bool:
    """Whether two configurations name the same storage (same settings, same data folder)."""
    return dict(a.storage.options) == dict(b.storage.options) and a.data_dir == b.data_dir


def migrate_storage(args: argparse.Namespace) -> int:
    config = load_config(args)
    target_config = load_target(args.to)
    if same_store(config, target_config):
        return fail(f"--to {args.to} names the storage already configured; nothing to copy")
    db = open_database(config, migrate=False)
    source = open_storage(config)
    try:
        # A dry run changes nothing, so it does not let check() create a container or folder.
        target = open_storage(target_config, check=not args.dry_run)
    except ConfigError as exc:
        raise ConfigError(f"--to {args.to}: {exc}") from None
    try:
        with db.transaction() as tx:
            total = int(tx.scalar("SELECT COUNT(*) + COUNT(metadata_sha256) FROM files") or 0)
        # Streamed in pages: memory stays flat at any size. A dry run stores nothing, so it
        # reads the rows without the objects' metadata (two table lookups fewer per row).
        wanted = referenced_objects(db, with_metadata=not args.dry_run)
        what = "checking" if args.dry_run else "copying"
        print(
            f"{what} {total} objects from {config.storage.backend} to "
            f"{target_config.storage.backend} ({args.to}) with {args.jobs} jobs"
            + (", verifying objects already there" if args.verify else ""),
            file=sys.stderr,
        )
        progress = Progress(total, sys.stderr)

        def report(failure: Failure) -> None:
            progress.note(f"FAILED {failure.filename} ({failure.path}): {failure.error}")

        write = sys.stdout.write

        def planned(obj: StoredObject) -> None:  # printed as found: nothing is held
            size = f"{obj.size} bytes" if obj.size is not None else "size unknown"
            write(f"would copy {obj.path} ({size})\n")

        result = Migration(
            source,
            target,
            jobs=args.jobs,
            verify=args.verify,
            dry_run=args.dry_run,
            progress=progress,
            on_failure=report,
            on_planned=planned,
            cache_control=CachePolicy.from_config(config.cdn.options).cache_control(policy.FILE),
        ).run(wanted, total=total)
    finally:
        source.close()
        target.close()
        db.close()

    if result.failed:
        print(f"{result.failed} objects could not be copied:", file=sys.stderr)
        for failure in result.failures:
            print(
                f"  {failure.filename}: {failure.path} (after {failure.attempts} attempts): {failure.error}",
                file=sys.stderr,
            )
        if result.failed > len(result.failures):
            print(
                f"  ... and {result.failed - len(result.failures)} more, each named above as it failed",
                file=sys.stderr,
            )
    print(result.summary(dry_run=args.dry_run))
    if result.failed:
        return 1
    if not args.dry_run:
        print(
            f"every object is in the target: copy the [storage] section of {args.to} into "
            f"{config.source or 'config.ini'} and restart the index",
            file=sys.stderr,
        )
    return 0
