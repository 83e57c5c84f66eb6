"""Rows read in batches as plain tuples, for the lists that run to millions of rows.

``Tx.all`` builds one dict per row in memory; at pypi.org's size (600,000
projects, 6,000,000 files) that is seconds of Python and gigabytes. These
helpers keep memory flat: a server-side cursor on PostgreSQL, ``fetchmany``
on SQLite, and tuples instead of dicts.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

from pypi.index.db import Tx, _pg_sql

_names = itertools.count()


def rows(tx: Tx, sql: str, params: Sequence[Any] = (), *, batch: int = 10_000) -> Iterator[tuple]:
    """Every row of ``sql`` as a tuple, fetched ``batch`` rows at a time."""
    for chunk in batches(tx, sql, params, batch=batch):
        yield from chunk


def batches(tx: Tx, sql: str, params: Sequence[Any] = (), *, batch: int = 10_000) -> Iterator[list[tuple]]:
    """The rows of ``sql`` as lists of at most ``batch`` tuples (no Python work per row)."""
    if tx.dialect == "sqlite":
        cur = tx.conn.cursor()
        cur.row_factory = None
        try:
            cur.execute(sql, tuple(params))
            while chunk := cur.fetchmany(batch):
                yield chunk
        finally:
            cur.close()
        return
    import psycopg2.extensions

    # A named cursor is a server-side cursor; outside a transaction (autocommit) it must be WITH HOLD.
    cur = tx.conn.cursor(
        name=f"cloudpypi_stream_{next(_names)}",
        cursor_factory=psycopg2.extensions.cursor,
        withhold=bool(tx.conn.autocommit),
    )
    try:
        cur.execute(_pg_sql(sql), tuple(params))
        while chunk := cur.fetchmany(batch):
            yield chunk
    finally:
        cur.close()


def keyset(
    tx_factory: Any, select: str, key_column: str, *, batch: int = 10_000, where: str = ""
) -> Iterator[tuple]:
    """Every row of ``select`` in ``key_column`` order, one short transaction per ``batch`` rows.

    ``select`` is ``SELECT <key_column>, ... FROM ...`` (the key first); ``where`` extra conditions.
    No transaction stays open for the whole walk, so a long fsck holds no snapshot for minutes.
    """
    last: Any = None
    while True:
        conds = [c for c in (where, f"{key_column} > ?" if last is not None else "") if c]
        sql = select + (" WHERE " + " AND ".join(conds) if conds else "")
        sql += f" ORDER BY {key_column} LIMIT ?"
        params = ([last] if last is not None else []) + [batch]
        with tx_factory() as tx:
            chunk = list(rows(tx, sql, params, batch=batch))
        yield from chunk
        if len(chunk) < batch:
            return
        last = chunk[-1][0]


def referenced_objects(db: Any, *, batch: int = 10_000, with_metadata: bool = True) -> Iterator[Any]:
    """Every object the database references (pypi.index.objects.StoredObject), in code-point order
    of path, read in pages of ``batch`` file rows: memory stays flat at any size.

    A page is read from the ``files_objects`` index alone (it holds every column read here:
    an index-only scan on PostgreSQL, no table page per row; at 6,000,000 files in path order
    those random table reads were most of the time). ``with_metadata`` also joins each row's
    release and project for the objects' metadata, which a copy stores; fsck and dry runs go
    without it (``StoredObject.metadata`` is then empty) and save two lookups per row.
    """
    import heapq

    from pypi.index.objects import (
        METADATA_CONTENT_TYPE,
        METADATA_SUFFIX,
        StoredObject,
        content_type_of,
        object_metadata,
    )

    collate = ' COLLATE "C"' if db.dialect == "postgresql" else ""
    select = f"SELECT f.path{collate}, f.filename, f.size, f.sha256_digest, f.metadata_sha256"
    if with_metadata:
        select += (
            ", r.version, p.normalized_name FROM files f "
            "JOIN releases r ON r.id = f.release_id JOIN projects p ON p.id = r.project_id"
        )
    else:
        select += " FROM files f"
    make = StoredObject._make  # tuple.__new__: the fastest way to build millions of them
    meta = StoredObject._field_defaults["metadata"]
    # A wheel's X.whl.metadata may sort after other files' paths: held here until due.
    pending: list[tuple[str, StoredObject]] = []
    for row in keyset(db.transaction, select, f"f.path{collate}", batch=batch):
        path = row[0]
        while pending and pending[0][0] <= path:
            yield heapq.heappop(pending)[1]
        filename, size, sha256, metadata_sha256 = row[1:5]
        if with_metadata:
            meta = object_metadata(row[6], row[5], sha256)
        yield make((path, filename, sha256, int(size), content_type_of(filename), meta))
        if metadata_sha256:
            extra = path + METADATA_SUFFIX
            obj = make((extra, filename, metadata_sha256, None, METADATA_CONTENT_TYPE, meta))
            heapq.heappush(pending, (extra, obj))
    while pending:
        yield heapq.heappop(pending)[1]
