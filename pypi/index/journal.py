"""The journal of every change; its ids are the serials mirrors and caches key on.

Serials follow commit order: they come from the one-row ``serials`` counter,
raised inside the writing transaction while it holds the counter's row lock
(on SQLite the write lock), so a transaction that commits later always has
higher serials and ``last_serial`` never passes a change that is not yet
visible. Changes are normally recorded with :func:`pypi.index.changes.record`,
which takes the counter only just before COMMIT.
"""

from __future__ import annotations

from packaging.utils import canonicalize_name

from pypi.index.db import Tx, utcnow


def take_serials(tx: Tx, count: int = 1) -> int:
    """Reserve ``count`` serials in ``tx``; return the highest. Holds the counter's lock until commit."""
    return int(tx.scalar("UPDATE serials SET value = value + ? WHERE id = 1 RETURNING value", (count,)))


def write(
    tx: Tx, serial: int, name: str, version: str | None, action: str, by: str | None, *, touch: bool = True
) -> None:
    """Insert one journal row with ``serial`` (from :func:`take_serials`); move the project's serial."""
    tx.execute(
        "INSERT INTO journal (id, name, version, action, submitted_date, submitted_by) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (serial, name, version, action, utcnow(), by),
    )
    if touch:
        touch_project(tx, name, serial)


def touch_project(tx: Tx, name: str, serial: int) -> None:
    """Set project ``name``'s ``last_serial`` (by its indexed normalized name)."""
    tx.execute(
        "UPDATE projects SET last_serial = ? WHERE normalized_name = ?", (serial, canonicalize_name(name))
    )


def record(tx: Tx, name: str, version: str | None, action: str, by: str | None) -> int:
    """Write one journal entry for project ``name`` now and return its serial.

    The project's ``last_serial`` moves to the new serial in the same
    transaction. This takes the serial counter at once and holds it until the
    transaction ends; :func:`pypi.index.changes.record` holds it only for the
    commit.
    """
    serial = take_serials(tx, 1)
    write(tx, serial, name, version, action, by)
    return serial


def last_serial(tx: Tx) -> int:
    """The newest committed serial of the whole index (0 when empty): one row read."""
    return int(tx.scalar("SELECT value FROM serials WHERE id = 1") or 0)


def since(tx: Tx, serial: int, limit: int = 50000) -> list:
    """Journal entries after ``serial``, oldest first."""
    return tx.all(
        "SELECT id, name, version, action, submitted_date FROM journal WHERE id > ? ORDER BY id LIMIT ?",
        (serial, limit),
    )
