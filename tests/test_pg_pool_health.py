"""The PostgreSQL pool checks a connection before handing it out: a database restart,
an administrator ending backends, and old or long-idle connections cost no request an error."""

from __future__ import annotations

import contextlib
import time

import psycopg2
import pytest
import webtest

from pypi.app import make_app
from pypi.index.db import Database
from tests.conftest import make_config

pytestmark = pytest.mark.usefixtures("_pg_database")


def _backend_pids(db: Database, n: int) -> set[int]:
    """Hold ``n`` pooled connections at once, each asked for its backend."""
    with contextlib.ExitStack() as stack:
        txs = [stack.enter_context(db.reading()) for _ in range(n)]
        return {int(tx.scalar("SELECT pg_backend_pid()")) for tx in txs}


def _terminate_others(url: str) -> None:
    """What a restart does to the pool: every other backend of the database ends."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            deadline = time.monotonic() + 10
            while True:  # terminate only signals: wait until they are gone
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                if cur.fetchone()[0] == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
    finally:
        conn.close()


def test_terminated_backends_are_replaced_before_use(_pg_database):
    db = Database(_pg_database, pool_size=4)
    try:
        before = _backend_pids(db, 3)
        assert len(before) == 3
        _terminate_others(_pg_database)
        after = _backend_pids(db, 3)  # raised DatabaseError ("terminating connection") before
        assert len(after) == 3 and not after & before
        with db.transaction(write=True) as tx:
            assert tx.scalar("SELECT 1") == 1
    finally:
        db.close()


def test_requests_after_a_restart_get_no_503(tmp_path, _pg_database):
    config = make_config(tmp_path, _pg_database)
    db = Database(_pg_database, pool_size=6)
    app = webtest.TestApp(make_app(config, db=db))
    try:
        _backend_pids(db, 4)  # four pooled connections, as after a busy moment
        _terminate_others(_pg_database)
        for path in ("/simple/", "/simple/nothing-here/", "/pypi/nothing-here/json", "/simple/"):
            assert app.get(path, expect_errors=True).status_int in (200, 404)
    finally:
        db.close()


def test_connections_are_replaced_after_max_idle_and_max_lifetime(_pg_database):
    idle = Database(_pg_database, pool_size=2, max_idle=0.3)
    old = Database(_pg_database, pool_size=2, max_lifetime=0.3)
    try:
        first = {}
        for db in (idle, old):
            first[db] = _backend_pids(db, 1)
            assert _backend_pids(db, 1) == first[db]  # reused while young and busy
        time.sleep(0.4)
        for db in (idle, old):
            assert _backend_pids(db, 1) != first[db]
    finally:
        idle.close()
        old.close()
