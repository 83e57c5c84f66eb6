"""The database layer: PostgreSQL connections are pooled and reused, and a dead server is a DatabaseError."""

from __future__ import annotations

import threading

import pytest

from pypi.index.db import Database, DatabaseError


def _backend_pid(db: Database) -> int:
    with db.transaction() as tx:
        return int(tx.scalar("SELECT pg_backend_pid()"))


def test_postgres_connection_is_reused_between_transactions(_pg_database):
    db = Database(_pg_database, pool_size=4)
    try:
        assert len({_backend_pid(db) for _ in range(10)}) == 1
    finally:
        db.close()


def test_postgres_pool_caps_connections_and_keeps_them(_pg_database):
    """Twelve threads at once on a pool of three: all finish, on three connections kept open."""
    db = Database(_pg_database, pool_size=3)
    pids: set[int] = set()
    barrier = threading.Barrier(12)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(5):
                with db.transaction() as tx:
                    pids.add(int(tx.scalar("SELECT pg_backend_pid()")))
                    tx.execute("SELECT pg_sleep(0.01)")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert 1 <= len(pids) <= 3
        # Three callers at once now get connections that stayed open, not new ones.
        held: set[int] = set()
        inside = threading.Barrier(3)

        def hold() -> None:
            with db.transaction() as tx:
                held.add(int(tx.scalar("SELECT pg_backend_pid()")))
                inside.wait(timeout=10)

        holders = [threading.Thread(target=hold) for _ in range(3)]
        for t in holders:
            t.start()
        for t in holders:
            t.join()
        assert len(held) == 3 and held <= pids
    finally:
        db.close()


def test_postgres_connection_left_in_error_is_not_reused(_pg_database):
    db = Database(_pg_database, pool_size=2)
    try:
        first = _backend_pid(db)
        with pytest.raises(DatabaseError):
            with db.transaction() as tx:
                tx.execute("SELECT * FROM no_such_table")
        # The failed transaction was rolled back; the connection is still usable.
        assert _backend_pid(db) == first
    finally:
        db.close()


def test_unreachable_postgres_is_a_database_error():
    db = Database("postgresql://nobody@127.0.0.1:1/none", pool_size=2)
    with pytest.raises(DatabaseError, match="cannot connect to PostgreSQL"):
        with db.transaction():
            pass
    # The failed connect gave its slot back: the next attempt fails the same way, not by waiting.
    with pytest.raises(DatabaseError, match="cannot connect to PostgreSQL"):
        with db.transaction():
            pass
    db.close()


def test_reading_on_postgres_sees_committed_rows_and_returns_the_connection(_pg_database):
    db = Database(_pg_database, pool_size=1)
    try:
        with db.transaction(write=True) as tx:
            tx.execute("CREATE TEMP TABLE IF NOT EXISTS t_read (v INTEGER)")
        with db.reading() as tx:
            assert tx.scalar("SELECT 41 + 1") == 42
        # The one connection went back to the pool usable, in transaction mode again.
        with db.transaction(write=True) as tx:
            assert tx.conn.autocommit is False
            tx.execute("INSERT INTO t_read VALUES (1)")
        with db.reading() as tx:
            assert tx.scalar("SELECT COUNT(*) FROM t_read") == 1
    finally:
        db.close()


def test_sqlite_writers_of_one_process_queue_without_the_busy_handler(tmp_path):
    """Two threads' write transactions: the second waits on the process's lock, handed over
    when the first commits, not on SQLite's busy handler (its polling sleeps up to 100 ms).
    With the busy handler off, the second would fail at once with "database is locked"."""
    db = Database(f"sqlite:///{tmp_path}/q.sqlite3")
    try:
        with db.transaction(write=True) as tx:
            tx.execute("CREATE TABLE t (n INTEGER)")
        holding, release, errors = threading.Event(), threading.Event(), []

        def first() -> None:
            with db.transaction(write=True) as tx:
                tx.execute("INSERT INTO t VALUES (1)")
                holding.set()
                release.wait(30)

        def second() -> None:
            db._sqlite_conn().execute("PRAGMA busy_timeout=0")
            try:
                with db.transaction(write=True) as tx:
                    tx.execute("INSERT INTO t VALUES (2)")
            except Exception as exc:  # noqa: BLE001 - recorded for the assertion
                errors.append(exc)

        a = threading.Thread(target=first)
        a.start()
        holding.wait(30)
        b = threading.Thread(target=second)
        b.start()
        b.join(0.2)
        assert b.is_alive() and not errors  # queued, not failed
        release.set()
        a.join(30)
        b.join(30)
        assert not errors, errors
        with db.transaction() as tx:
            assert tx.scalar("SELECT COUNT(*) FROM t") == 2
    finally:
        db.close()
