"""What every sub-command shares: the --config option and opening the index."""

from __future__ import annotations

import argparse
import sys

import storage
from pypi import config as config_mod
from pypi.config import Config, ConfigError
from pypi.index import auth
from pypi.index.db import Database, DatabaseError, Tx


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config.ini to read (default: $CLOUDPYPI_CONFIG, else built-in defaults: "
        "SQLite and local files under ./data)",
    )


def load_config(args: argparse.Namespace) -> Config:
    return config_mod.load(getattr(args, "config", None))


def open_database(config: Config, *, migrate: bool = True) -> Database:
    """The database, with its schema brought up to date; exits with a message if unreachable."""
    db = Database(
        config.database.url,
        pool_size=config.server.threads + 4,
        max_idle=config.database.pool_max_idle,
        max_lifetime=config.database.pool_max_lifetime,
    )
    try:
        if migrate:
            db.migrate()
    except DatabaseError as exc:
        raise ConfigError(f"[database] url: {config_mod.mask_url(config.database.url)}: {exc}") from None
    return db


def prepare_whole_index(db: Database) -> float:
    """Store the whole-index pages (pypi.views.whole_index) before any request needs them; the
    seconds it took. A database error becomes a ConfigError, as opening it does."""
    from pypi.views import whole_index  # the views' imports: only for the commands that serve

    try:
        return whole_index.prepare(db)
    except DatabaseError as exc:
        raise ConfigError(f"[database] url: could not store the whole-index pages: {exc}") from None


def open_storage(config: Config, *, check: bool = True) -> storage.Storage:
    """The storage backend, checked; a bad setting becomes a ConfigError naming the key."""
    try:
        store = storage.from_config(config.storage.options, data_dir=config.data_dir)
        if check:
            store.check()
    except storage.StorageMisconfigured as exc:
        raise ConfigError(
            str(exc) if str(exc).startswith("[") else f"[storage] {exc.key or 'backend'}: {exc}"
        ) from None
    except storage.StorageUnavailable as exc:
        raise ConfigError(
            f"[storage] the {config.storage.backend} backend cannot be reached: {exc}"
        ) from None
    return store


def fail(message: str) -> int:
    print(f"cloudpypi: {message}", file=sys.stderr)
    return 1


def find_user(tx: Tx, username: str) -> auth.User | None:
    """The user named ``username``; None once ``fail`` has said there is none (return 1 then)."""
    user = auth.find_user(tx, username)
    if user is None:
        fail(f"no user named {username!r}")
    return user
