"""Fixtures shared by every test folder: the real services the tests start themselves,
and the application on each database (SQLite and a real PostgreSQL)."""

from __future__ import annotations

import base64

import pytest
import webtest

from pypi.app import make_app
from pypi.config import build
from pypi.index import auth
from pypi.index.db import Database

pytest_plugins = [
    "tests.services.postgres",
    "tests.services.moto_s3",
    "tests.services.swift",
    "tests.services.varnish",
    "tests.backends",
]

PASSWORD = "correct horse battery"
TABLES = [
    "upstream_pages",
    "upstream_state",
    "purge_outbox",
    "stored_segments",
    "stored_pages",
    "journal",
    "file_registry",
    "files",
    "releases",
    "roles",
    "projects",
    "api_tokens",
    "users",
]


@pytest.fixture(scope="session")
def _pg_database(postgres_server):
    """One migrated PostgreSQL database for the session; tests empty it before use."""
    url = postgres_server.new_database()
    db = Database(url)
    db.migrate()
    yield url
    db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """An empty, migrated database of each kind."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/test.sqlite3"
        db = Database(url)
        db.migrate()
        db.close()
        return url
    url = request.getfixturevalue("_pg_database")
    db = Database(url)
    with db.transaction(write=True) as tx:
        tx.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
        tx.execute("UPDATE serials SET value = 0")
    db.close()
    return url


def make_config(tmp_path, db_url: str, **sections):
    """A Config on ``db_url`` with data under tmp_path; ``sections`` override/extend."""
    raw = {
        "server": {"data_dir": str(tmp_path / "data")},
        "database": {"url": db_url},
        "storage": {"backend": "local"},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return build(raw, base_dir=str(tmp_path))


@pytest.fixture
def config(tmp_path, db_url):
    return make_config(tmp_path, db_url)


@pytest.fixture
def db(config):
    database = Database(config.database.url)
    yield database
    database.close()


@pytest.fixture
def app(config, db):
    return make_app(config, db=db)


@pytest.fixture
def testapp(app):
    return webtest.TestApp(app)


def basic(username: str, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def users(db):
    """alice and bob, with password PASSWORD."""
    with db.transaction(write=True) as tx:
        return {name: auth.create_user(tx, name, PASSWORD) for name in ("alice", "bob")}
