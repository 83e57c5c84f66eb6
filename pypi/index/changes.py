"""The one call for a change that alters what a page shows.

``record(tx, ...)`` inside the change's transaction collects the journal entry
and its CDN purge keys on the transaction. Just before COMMIT they are written
together: the serial counter is raised once for all of the transaction's
entries (taking its row lock only for the commit itself), the journal rows get
those serials, each project's ``last_serial`` moves, and the purges are queued
in the outbox. Serials therefore grow in the order changes become visible
(see :mod:`pypi.index.journal`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from packaging.utils import canonicalize_name

from pypi.index import cache_keys, journal, outbox
from pypi.index.db import Tx


@dataclass
class Change:
    """One recorded change; ``serial`` is set once the transaction is about to commit."""

    name: str
    version: str | None
    action: str
    by: str | None
    purges: dict[str, list[str]] = field(default_factory=dict)
    serial: int | None = None


def record(
    tx: Tx,
    name: str,
    version: str | None,
    action: str,
    by: str | None,
    *,
    new_project: bool = False,
    purges: Mapping[str, Sequence[str]] | None = None,
) -> Change:
    """Record a change to project ``name``: its journal entry and purges, written at commit.

    The purges are the project's pages (and /simple/ when ``new_project``),
    or ``purges`` when given. Read the serial from the returned
    :class:`Change` after the transaction has committed.
    """
    if purges is None:
        purges = cache_keys.change_purges(canonicalize_name(name), new_project=new_project)
    change = Change(name, version, action, by, {k: list(v) for k, v in purges.items()})
    pending = tx.__dict__.setdefault("_pending_changes", [])
    pending.append(change)
    tx.before_commit(_flush)
    return change


def _flush(tx: Tx) -> None:
    pending: list[Change] = tx.__dict__.pop("_pending_changes", [])
    if not pending:
        return
    top = journal.take_serials(tx, len(pending))
    purges: dict[str, list[str]] = {}
    newest: dict[str, tuple[str, int]] = {}
    for serial, change in enumerate(pending, start=top - len(pending) + 1):
        change.serial = serial
        journal.write(tx, serial, change.name, change.version, change.action, change.by, touch=False)
        newest[canonicalize_name(change.name)] = (change.name, serial)
        for key, paths in change.purges.items():
            merged = purges.setdefault(key, [])
            merged.extend(p for p in paths if p not in merged)
    for name, serial in newest.values():
        journal.touch_project(tx, name, serial)
    outbox.enqueue(tx, purges)
