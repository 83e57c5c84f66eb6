"""Database connections, transactions and schema migrations, for SQLite and PostgreSQL.

SQL is written once with ``?`` placeholders; the PostgreSQL side rewrites them.
Each thread (and, after a fork, each process) gets its own connections.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import ipaddress
import os
import re
import select
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any

SCHEMA_PACKAGE = "pypi.index.schema"
_ID = {
    "sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "postgresql": "BIGSERIAL PRIMARY KEY",
}
#: Other dialect words a migration may use: {blob} (bytes), {pattern_ops} (an index LIKE 'x%' can
#: use), {collate_c} (code-point order, as Python sorts text).
_WORDS = {
    "sqlite": {"blob": "BLOB", "pattern_ops": "", "collate_c": "", "include": ", "},
    "postgresql": {
        "blob": "BYTEA",
        "pattern_ops": " text_pattern_ops",
        "collate_c": ' COLLATE "C"',
        "include": ") INCLUDE (",
    },
}


class DatabaseError(Exception):
    """The database could not be reached or failed a statement."""


class IntegrityError(DatabaseError):
    """A unique or foreign-key constraint refused the change."""


def utcnow() -> str:
    """The current time as the ISO-8601 UTC text the schema stores."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1``, ``$2``, ... (for PREPARE)."""
    parts = sql.split("?")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))


def _pgcode(exc: BaseException) -> str | None:
    return getattr(exc.__cause__, "pgcode", None)


@functools.lru_cache(maxsize=1024)
def _pg_sql(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class Tx:
    """One open transaction: run statements, read rows (``row["column"]``)."""

    def __init__(self, conn: Any, dialect: str) -> None:
        self.conn = conn
        self.dialect = dialect
        self._errors = _error_types(dialect)
        self._before_commit: list[Callable[[Tx], None]] = []

    def before_commit(self, hook: Callable[[Tx], None]) -> None:
        """Run ``hook(tx)`` once, as the last statements before COMMIT (once however often added)."""
        if hook not in self._before_commit:
            self._before_commit.append(hook)

    def _prepare_commit(self) -> None:
        while self._before_commit:
            self._before_commit.pop(0)(self)

    def blob(self, data: bytes) -> Any:
        """``data`` as a parameter for a binary column of this database."""
        if self.dialect == "postgresql":
            import psycopg2

            return psycopg2.Binary(data)
        return data

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self.dialect == "postgresql":
            sql = _pg_sql(sql)
        cur = self.conn.cursor()
        try:
            cur.execute(sql, tuple(params))
        except self._errors[0] as exc:
            raise IntegrityError(str(exc).strip()) from exc
        except self._errors[1] as exc:
            raise DatabaseError(str(exc).strip()) from exc
        return cur

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row, or None."""
        return self.execute(sql, params).fetchone()

    def lookup(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """``one`` for a statement every request runs: on PostgreSQL prepared once per
        connection (named after its text), so the server parses and plans it once instead of
        each time (half the server's work for a one-row lookup). Only outside a transaction
        (``Database.reading``), where a failed statement aborts nothing; on a connection whose
        session does not last (a pooler in transaction mode) it runs unprepared."""
        prepared = getattr(self.conn, "prepared", None)
        if self.dialect != "postgresql" or prepared is None or not self.conn.autocommit:
            return self.one(sql, params)
        name = prepared.get(sql)
        try:
            if name is None:
                name = "cloudpypi_" + hashlib.md5(sql.encode()).hexdigest()[:20]
                try:
                    self.execute(f"PREPARE {name} AS {_numbered(sql)}")
                except DatabaseError as exc:
                    if _pgcode(exc) != "42P05":  # duplicate_prepared_statement: the same text
                        raise
                prepared[sql] = name
            args = f" ({', '.join('?' * len(params))})" if params else ""
            return self.one(f"EXECUTE {name}{args}", params)
        except DatabaseError as exc:
            # 26000 invalid_sql_statement_name: not one session throughout (a pooler);
            # 0A000 "cached plan must not change result type": a migration changed the columns.
            if _pgcode(exc) not in ("26000", "0A000"):
                raise
            self.conn.prepared = None
            return self.one(sql, params)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.execute(sql, params).fetchone()
        return None if row is None else row[0] if self.dialect == "sqlite" else next(iter(row.values()))

    def insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run an INSERT and return the new row's id."""
        return int(self.scalar(sql + " RETURNING id", params))


def _error_types(dialect: str) -> tuple[type[BaseException], type[BaseException]]:
    if dialect == "sqlite":
        return sqlite3.IntegrityError, sqlite3.Error
    import psycopg2

    return psycopg2.IntegrityError, psycopg2.Error


class Database:
    """A database named by URL: ``sqlite:///PATH`` or ``postgresql://user:pw@host:port/db``."""

    def __init__(
        self, url: str, *, pool_size: int = 16, max_idle: float = 600.0, max_lifetime: float = 3600.0
    ) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            self.dialect = "sqlite"
            self.path = url[len("sqlite:///") :]
        elif url.startswith(("postgresql://", "postgres://")):
            self.dialect = "postgresql"
            self.path = ""
        else:
            raise DatabaseError("database url must start with sqlite:/// or postgresql://")
        self.pool_size = pool_size
        self.max_idle = max_idle
        self.max_lifetime = max_lifetime
        self._local = threading.local()
        self._pool: Any = None
        self._pool_pid = 0
        self._lock = threading.Lock()
        #: Held by this process's SQLite write transaction (see ``transaction``).
        self._sqlite_writer = threading.Lock()

    # -- connections ---------------------------------------------------
    def _sqlite_conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def _pg_pool(self) -> _PgPool:
        if self._pool is None or self._pool_pid != os.getpid():
            with self._lock:
                if self._pool is None or self._pool_pid != os.getpid():
                    self._pool = _PgPool(
                        self.url, self.pool_size, max_idle=self.max_idle, max_lifetime=self.max_lifetime
                    )
                    self._pool_pid = os.getpid()
        return self._pool

    @contextmanager
    def transaction(self, *, write: bool = False) -> Iterator[Tx]:
        """A transaction committed on normal exit and rolled back on an exception.

        ``write=True`` takes SQLite's write lock at the start, so two writers
        queue instead of failing when one upgrades its read lock.
        """
        if self.dialect == "sqlite":
            # This process's writers queue on a lock, handed over at once; SQLite's busy
            # handler (for other processes) polls with sleeps of up to 100 ms.
            with self._sqlite_writer if write else contextlib.nullcontext():
                conn = self._sqlite_conn()
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    tx = Tx(conn, "sqlite")
                    yield tx
                    tx._prepare_commit()
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise DatabaseError(f"commit failed: {exc}") from exc
            return
        pool = self._pg_pool()
        import psycopg2

        conn = pool.get()
        broken = False
        try:
            try:
                tx = Tx(conn, "postgresql")
                yield tx
                tx._prepare_commit()
            except BaseException:
                try:
                    conn.rollback()
                except psycopg2.Error:
                    broken = True
                raise
            try:
                conn.commit()
            except psycopg2.Error as exc:
                broken = bool(conn.closed)
                if not broken:
                    conn.rollback()
                if isinstance(exc, psycopg2.IntegrityError):
                    raise IntegrityError(str(exc)) from exc
                raise DatabaseError(f"commit failed: {_first_line(exc)}") from exc
        finally:
            pool.put(conn, close=broken)

    @contextmanager
    def reading(self) -> Iterator[Tx]:
        """Reads only, for the hot read paths (simple index, JSON API).

        On SQLite a deferred transaction: one snapshot for every statement. On
        PostgreSQL autocommit: each statement is one round trip, without the
        BEGIN and COMMIT round trips around it; under READ COMMITTED a
        transaction would not give one snapshot either. Pages are keyed by the
        serial read first, so a later statement that sees a newer change only
        makes the page fresher.
        """
        if self.dialect == "sqlite":
            with self.transaction() as tx:
                yield tx
            return
        pool = self._pg_pool()
        conn = pool.get()
        conn.autocommit = True
        try:
            yield Tx(conn, "postgresql")
        finally:
            with contextlib.suppress(Exception):  # a dead connection: closed below
                conn.autocommit = False
            # A connection still in autocommit must never serve a transaction().
            pool.put(conn, close=conn.autocommit)

    @property
    def local(self) -> bool:
        """Whether the database is on this host: SQLite, or PostgreSQL over loopback or a Unix
        socket (a round trip of tens of microseconds, not a network's)."""
        if self.dialect == "sqlite":
            return True
        parts = urllib.parse.urlsplit(self.url)
        hosts = urllib.parse.parse_qs(parts.query).get("host", [])
        if parts.hostname:
            hosts.append(parts.hostname)
        return all(_loopback(h) for h in hosts)

    def close(self) -> None:
        """Close this thread's SQLite connection or the PostgreSQL pool."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if self._pool is not None and self._pool_pid == os.getpid():
            self._pool.close_idle()
            self._pool = None

    # -- schema --------------------------------------------------------
    def migrations(self) -> list[tuple[int, str, str]]:
        """Every (number, name, SQL) shipped in pypi/schema, in order."""
        found = []
        for entry in resources.files(SCHEMA_PACKAGE).iterdir():
            m = re.match(r"^(\d{4})_(\w+)\.sql$", entry.name)
            if m:
                found.append((int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
        return sorted(found)

    def migrate(self) -> list[int]:
        """Apply the migrations not yet applied; return their numbers. Safe to run concurrently."""
        applied: list[int] = []
        with self.transaction(write=True) as tx:
            if self.dialect == "postgresql":
                tx.execute("SELECT pg_advisory_xact_lock(7216001)")
            tx.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied TEXT NOT NULL)"
            )
            done = {row["version"] for row in tx.all("SELECT version FROM schema_migrations")}
            for number, name, sql in self.migrations():
                if number in done:
                    continue
                sql = sql.replace("{id}", _ID[self.dialect])
                for word, value in _WORDS[self.dialect].items():
                    sql = sql.replace("{" + word + "}", value)
                for statement in _statements(sql):
                    tx.execute(statement)
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)",
                    (number, name, utcnow()),
                )
                applied.append(number)
        return applied

    def schema_version(self) -> int:
        with self.transaction() as tx:
            try:
                return int(tx.scalar("SELECT MAX(version) FROM schema_migrations") or 0)
            except DatabaseError:
                return 0


class _PgPool:
    """At most ``size`` PostgreSQL connections, opened when first needed and kept open.

    (psycopg2's own pools close every returned connection above ``minconn``, so
    under concurrency most requests paid for a new connection.) A caller waits
    for a free connection rather than failing when all are in use.

    A connection is checked before it is handed out, so that a database
    restart (or a backend ended by an administrator, or a proxy's idle cut)
    costs no request an error: one idle longer than ``max_idle`` seconds, or
    open longer than ``max_lifetime``, is replaced; one whose socket has
    anything to read (an idle connection has nothing to read, unless the server
    ended it) is replaced; one idle longer than ``PING_AFTER`` seconds must
    answer ``SELECT 1`` first. The socket check is a system call, not a round
    trip, so the hot read paths stay at one round trip a page.
    """

    WAIT_SECONDS = 30
    #: Seconds of idleness after which a connection is pinged before use.
    PING_AFTER = 30.0

    def __init__(self, url: str, size: int, *, max_idle: float = 600.0, max_lifetime: float = 3600.0) -> None:
        import psycopg2
        import psycopg2.extensions
        import psycopg2.extras

        class Connection(psycopg2.extensions.connection):
            """A connection that knows when it was opened and last returned to the pool."""

            opened = 0.0
            returned = 0.0
            #: SQL text -> the name it is prepared under in this session (Tx.lookup); None: never.
            prepared: dict[str, str] | None = None

        self.url = url
        self.size = size
        self.max_idle = max_idle
        self.max_lifetime = max_lifetime
        self._psycopg2 = psycopg2
        self._connection_factory = Connection
        self._cursor_factory = psycopg2.extras.RealDictCursor
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)

    def get(self) -> Any:
        psycopg2 = self._psycopg2
        if not self._slots.acquire(timeout=self.WAIT_SECONDS):
            raise DatabaseError(
                f"all {self.size} PostgreSQL connections stayed busy for {self.WAIT_SECONDS} s"
            )
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            if self._usable(conn):
                return conn
            with contextlib.suppress(Exception):
                conn.close()
        try:
            conn = psycopg2.connect(
                self.url,
                connection_factory=self._connection_factory,
                cursor_factory=self._cursor_factory,
                connect_timeout=10,
            )
        except psycopg2.Error as exc:
            self._slots.release()
            raise DatabaseError(f"cannot connect to PostgreSQL: {_first_line(exc)}") from None
        conn.opened = time.monotonic()
        conn.prepared = {}
        return conn

    def _usable(self, conn: Any) -> bool:
        """Whether an idle connection may serve a request (see the class's description)."""
        now = time.monotonic()
        if conn.closed or now - conn.opened > self.max_lifetime or now - conn.returned > self.max_idle:
            return False
        try:
            if _readable(conn.fileno()):
                return False
            if now - conn.returned > self.PING_AFTER:
                conn.cursor().execute("SELECT 1")
                conn.rollback()
        except Exception:
            return False
        return True

    def put(self, conn: Any, *, close: bool = False) -> None:
        """Return ``conn``; a broken one, or one left inside a transaction, is closed instead."""
        try:
            now = time.monotonic()
            idle = (
                not close
                and not conn.closed
                and (conn.info.transaction_status == self._psycopg2.extensions.TRANSACTION_STATUS_IDLE)
                and now - conn.opened <= self.max_lifetime
            )
            if idle:
                conn.returned = now
                with self._lock:
                    self._idle.append(conn)
            else:
                conn.close()
        finally:
            self._slots.release()

    def close_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _loopback(host: str) -> bool:
    """Whether a libpq host names this machine: a Unix socket's folder, localhost, a loopback address."""
    if host.startswith("/") or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _readable(fd: int) -> bool:
    """Whether ``fd`` has data (or end of file) waiting, without blocking."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])


def _statements(sql: str) -> list[str]:
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
