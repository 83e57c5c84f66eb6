"""The journal of every change; its ids are the serials mirrors and caches key on."""

from __future__ import annotations

from pypi.index.db import Tx, utcnow


def record(tx: Tx, name: str, version: str | None, action: str, by: str | None) -> int:
    """Write one journal entry for project ``name`` and return its serial.

    The project's ``last_serial`` moves to the new serial in the same transaction.
    """
    serial = tx.insert(
        "INSERT INTO journal (name, version, action, submitted_date, submitted_by) VALUES (?, ?, ?, ?, ?)",
        (name, version, action, utcnow(), by),
    )
    tx.execute("UPDATE projects SET last_serial = ? WHERE name = ?", (serial, name))
    return serial


def last_serial(tx: Tx) -> int:
    """The newest serial of the whole index (0 when empty)."""
    return int(tx.scalar("SELECT MAX(id) FROM journal") or 0)


def since(tx: Tx, serial: int, limit: int = 50000) -> list:
    """Journal entries after ``serial``, oldest first."""
    return tx.all(
        "SELECT id, name, version, action, submitted_date FROM journal WHERE id > ? ORDER BY id LIMIT ?",
        (serial, limit),
    )
