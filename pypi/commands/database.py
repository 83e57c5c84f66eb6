"""``cloudpypi initdb``: create or migrate the schema, and store the whole-index pages."""

from __future__ import annotations

import argparse

from pypi.commands.common import add_config_option, load_config, open_database, prepare_whole_index


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("initdb", help="create the database schema, or migrate it to the newest")
    add_config_option(p)
    p.set_defaults(func=initdb)


def initdb(args: argparse.Namespace) -> int:
    config = load_config(args)
    db = open_database(config, migrate=False)
    applied = db.migrate()
    version = db.schema_version()
    prepare_whole_index(db)
    if applied:
        print(f"applied migrations {', '.join(map(str, applied))}; schema version {version}")
    else:
        print(f"schema is up to date (version {version})")
    return 0
