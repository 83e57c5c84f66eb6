"""``cloudpypi check-config``: print the effective settings (secrets masked) and test them."""

from __future__ import annotations

import argparse
import dataclasses

from cdn import purge
from cdn.policy import CachePolicy
from pypi import config as config_mod
from pypi.commands.common import add_config_option, load_config, open_database, open_storage
from pypi.config import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-config", help="print the effective settings and check that they work")
    add_config_option(p)
    p.add_argument("--offline", action="store_true", help="check the values only; do not connect")
    p.set_defaults(func=check_config)


def check_config(args: argparse.Namespace) -> int:
    config = load_config(args)
    print(f"# settings from {config.source or 'built-in defaults'} and CLOUDPYPI_* variables")
    shown = {
        "server": {k: str(v) for k, v in dataclasses.asdict(config.server).items()},
        "webui": {k: str(v) for k, v in dataclasses.asdict(config.webui).items()},
        "database": {"url": config.database.url},
        "storage": {
            "backend": config.storage.backend,
            "serve": config.storage.serve,
            **config.storage.options,
        },
        "cdn": {"files_url": config.cdn.files_url, "purge": config.cdn.purge, **config.cdn.options},
        "access": {k: str(v) for k, v in dataclasses.asdict(config.access).items()},
    }
    for section, values in shown.items():
        print(f"[{section}]")
        for key, value in values.items():
            print(f"{key} = {config_mod.masked(value, key)}")
        print()
    try:
        CachePolicy.from_config(config.cdn.options)
        purger = purge.from_config(config.cdn.options)
    except ValueError as exc:  # PurgerMisconfigured is a ValueError too
        raise ConfigError(str(exc)) from None
    if args.offline:
        print("values are valid (not connected)")
        return 0
    db = open_database(config, migrate=False)
    version = db.schema_version()
    print(f"database: reachable ({db.dialect}, schema version {version})")
    open_storage(config)
    print(f"storage: {config.storage.backend} reachable and writable")
    print(f"cdn: purge = {config.cdn.purge} ({purger.describe()})")
    return 0
