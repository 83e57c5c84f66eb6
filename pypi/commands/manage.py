"""``cloudpypi yank``, ``unyank`` and ``remove``: managing releases from the command line."""

from __future__ import annotations

import argparse
import sys

from pypi.commands.common import add_config_option, fail, load_config, open_database, open_storage
from pypi.index import packages
from pypi.index.db import Database
from pypi.operations import removal


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("yank", help="mark a release yanked (PEP 592): installers skip it unless pinned")
    p.add_argument("project")
    p.add_argument("version")
    p.add_argument("--reason", default="", metavar="TEXT", help="shown to users by installers")
    add_config_option(p)
    p.set_defaults(func=yank)

    p = sub.add_parser("unyank", help="undo a yank")
    p.add_argument("project")
    p.add_argument("version")
    add_config_option(p)
    p.set_defaults(func=unyank)

    p = sub.add_parser(
        "remove",
        help="delete a project, a release or one file, with its stored objects",
        description="Delete a whole project, one release (PROJECT VERSION), or one file "
        "(--file FILENAME). Files are deleted from storage and the database; their names can "
        "never be uploaded again. If the storage refuses a delete, that file stays in the index "
        "and the command can be run again.",
    )
    p.add_argument("project")
    p.add_argument("version", nargs="?")
    p.add_argument("--file", metavar="FILENAME", help="remove only this file")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add_config_option(p)
    p.set_defaults(func=remove)


def yank(args: argparse.Namespace) -> int:
    db = open_database(load_config(args), migrate=False)
    try:
        serial = removal.yank(db, args.project, args.version, args.reason)
    except removal.RemovalError as exc:
        return fail(str(exc))
    print(f"yanked {args.project} {args.version} (serial {serial})")
    return 0


def unyank(args: argparse.Namespace) -> int:
    db = open_database(load_config(args), migrate=False)
    try:
        serial = removal.unyank(db, args.project, args.version)
    except removal.RemovalError as exc:
        return fail(str(exc))
    print(f"unyanked {args.project} {args.version} (serial {serial})")
    return 0


def _describe(db: Database, args: argparse.Namespace) -> str:
    """What ``remove`` is about to delete; NotFoundError if it does not exist."""
    with db.transaction() as tx:
        project = packages.get_project(tx, args.project)
        if project is None:
            raise removal.NotFoundError(f"no project named {args.project!r}")
        if args.file:
            return f"the file {args.file} of {project['name']}"
        if args.version:
            release = packages.get_release(tx, project["id"], args.version)
            if release is None:
                raise removal.NotFoundError(f"project {project['name']!r} has no release {args.version!r}")
            count = len(packages.release_files(tx, release["id"]))
            return f"release {project['name']} {release['version']} and its {count} files"
        count = len(packages.project_files(tx, project["id"]))
        releases = len(packages.releases(tx, project["id"]))
        return f"the whole project {project['name']}: {releases} releases, {count} files"


def _confirmed(what: str) -> bool:
    if not sys.stdin.isatty():
        print(f"cloudpypi: not removing {what}: add --yes to confirm", file=sys.stderr)
        return False
    answer = input(f"Remove {what}? This cannot be undone, and the filenames can never be reused. [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def remove(args: argparse.Namespace) -> int:
    config = load_config(args)
    db = open_database(config, migrate=False)
    try:
        what = _describe(db, args)
    except removal.RemovalError as exc:
        return fail(str(exc))
    if not args.yes and not _confirmed(what):
        return 1
    store = open_storage(config)
    try:
        if args.file:
            result = removal.delete_file(db, store, args.file, project=args.project, version=args.version)
        elif args.version:
            result = removal.delete_release(db, store, args.project, args.version)
        else:
            result = removal.delete_project(db, store, args.project)
    except removal.RemovalError as exc:  # NotFoundError: nothing changed
        return fail(str(exc))
    finally:
        store.close()
    for filename in result.files:
        print(f"removed file {filename}")
    print(f"removed {what} (serial {result.serial})")
    if result.leftovers:
        for leftover in result.leftovers:
            print(f"warning: could not delete {leftover}", file=sys.stderr)
        return fail(
            f"{len(result.leftovers)} stored object(s) could not be deleted; they are out of the index "
            "(orphans): run `cloudpypi fsck --repair` once the storage is back"
        )
    return 0
