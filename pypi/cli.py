"""The ``cloudpypi`` command: the sub-commands of each module in pypi/commands/."""

from __future__ import annotations

import argparse
import logging
import sys

from pypi.commands import (
    access,
    check_config,
    database,
    fsck,
    manage,
    migrate_storage,
    mirror,
    purge,
    serve,
    users,
)
from pypi.config import ConfigError
from pypi.index.db import DatabaseError

#: The sub-command modules, in the order ``cloudpypi --help`` lists them; each has
#: ``register(subparsers)`` that adds its sub-commands and sets ``func(args) -> int``.
COMMAND_MODULES = (serve, database, users, access, check_config, purge, migrate_storage, fsck, manage, mirror)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudpypi", description="A Python package index on object storage behind a CDN."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"cloudpypi: configuration error: {exc}", file=sys.stderr)
        return 2
    except DatabaseError as exc:
        print(f"cloudpypi: [database] url: the database failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
