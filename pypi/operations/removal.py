"""Yanking releases, and deleting files, releases and projects.

Every change writes its journal entry (which moves the project's serial, so
cached pages re-render) and queues its CDN purges in the same transaction.

A delete removes one file at a time, in one write transaction each: delete
the row, then the stored objects (the ``.metadata``, then the file), then
commit. If the storage refuses a delete, the transaction rolls back and the
row stays, so no row ever points to a missing object; the command can simply
be repeated, since deleting an object that is already gone is not an error.
A release or project row goes last, once its files are gone. A deleted
file's name stays in ``file_registry``: it can never be uploaded again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import storage
from pypi.index import cache_keys, journal, outbox, packages
from pypi.index.db import Database, Tx
from pypi.index.objects import METADATA_SUFFIX


class RemovalError(Exception):
    """The change cannot be made; the message says why."""


class NotFoundError(RemovalError):
    """No such project, release or file."""


class StorageDeleteFailed(RemovalError):
    """The storage refused to delete an object: the file's row was kept."""

    def __init__(self, message: str, *, filename: str, path: str) -> None:
        super().__init__(message)
        self.filename = filename
        self.path = path


@dataclass(frozen=True)
class Removed:
    """What a delete removed, and the serial of its last journal entry."""

    serial: int
    files: list[str] = field(default_factory=list)


_FILE_ROW = (
    "SELECT f.id, f.filename, f.path, f.metadata_sha256, f.release_id, r.version, "
    "p.id AS project_id, p.name, p.normalized_name FROM files f "
    "JOIN releases r ON r.id = f.release_id JOIN projects p ON p.id = r.project_id "
)


def yank(db: Database, project: str, version: str, reason: str = "", *, by: str | None = None) -> int:
    """Mark the release yanked (PEP 592) with ``reason``; return the journal serial.

    Yanking a yanked release again replaces its reason. Raises NotFoundError.
    """
    with db.transaction(write=True) as tx:
        proj, release = _release(tx, project, version)
        tx.execute("UPDATE releases SET yanked = 1, yanked_reason = ? WHERE id = ?", (reason, release["id"]))
        serial = journal.record(tx, proj["name"], release["version"], "yank release", by)
        outbox.enqueue(tx, cache_keys.change_purges(proj["normalized_name"]))
        return serial


def unyank(db: Database, project: str, version: str, *, by: str | None = None) -> int:
    """Undo a yank; return the journal serial. Raises NotFoundError."""
    with db.transaction(write=True) as tx:
        proj, release = _release(tx, project, version)
        tx.execute("UPDATE releases SET yanked = 0, yanked_reason = '' WHERE id = ?", (release["id"],))
        serial = journal.record(tx, proj["name"], release["version"], "unyank release", by)
        outbox.enqueue(tx, cache_keys.change_purges(proj["normalized_name"]))
        return serial


def delete_file(
    db: Database,
    store: storage.Storage,
    filename: str,
    *,
    project: str | None = None,
    version: str | None = None,
    by: str | None = None,
) -> Removed:
    """Delete one file (row and objects); its release stays, even if now empty.

    ``project``/``version``, when given, must be the file's. Raises
    NotFoundError, or StorageDeleteFailed with the row kept.
    """
    with db.transaction(write=True) as tx:
        row = tx.one(_FILE_ROW + "WHERE f.filename = ?", (filename,))
        if row is None:
            raise NotFoundError(f"no file named {filename!r}")
        if project is not None:
            proj = packages.get_project(tx, project)
            if proj is None or proj["id"] != row["project_id"]:
                raise NotFoundError(f"{filename} is not a file of project {project!r}")
        if version is not None and (
            packages.canonical_version(version) != packages.canonical_version(row["version"])
        ):
            raise NotFoundError(f"{filename} is not a file of version {version} (it is of {row['version']})")
        serial = _remove_file(tx, store, row, by)
    return Removed(serial, [filename])


def delete_release(
    db: Database, store: storage.Storage, project: str, version: str, *, by: str | None = None
) -> Removed:
    """Delete a release: each of its files, then the release row. Raises NotFoundError or StorageDeleteFailed.

    If a file's storage delete fails, the files already removed stay removed and
    the rest (and the release) stay in place; repeating the call finishes the job.
    """
    with db.transaction() as tx:
        _, release = _release(tx, project, version)
        names = [f["filename"] for f in packages.release_files(tx, release["id"])]
    removed = _remove_files(db, store, names, by)
    with db.transaction(write=True) as tx:
        proj, release = _release(tx, project, version)
        # Files uploaded since the listing above go in this transaction.
        for row in tx.all(_FILE_ROW + "WHERE f.release_id = ?", (release["id"],)):
            _remove_file(tx, store, row, by)
            removed.append(row["filename"])
        tx.execute("DELETE FROM releases WHERE id = ?", (release["id"],))
        serial = journal.record(tx, proj["name"], release["version"], "remove release", by)
        outbox.enqueue(tx, cache_keys.change_purges(proj["normalized_name"]))
    return Removed(serial, removed)


def delete_project(db: Database, store: storage.Storage, project: str, *, by: str | None = None) -> Removed:
    """Delete a project: every file, then its releases, roles and the project row.

    /simple/ is purged too. Raises NotFoundError or StorageDeleteFailed (see delete_release).
    """
    with db.transaction() as tx:
        proj = _project(tx, project)
        names = [f["filename"] for f in packages.project_files(tx, proj["id"])]
    removed = _remove_files(db, store, names, by)
    with db.transaction(write=True) as tx:
        proj = _project(tx, project)
        for row in tx.all(_FILE_ROW + "WHERE r.project_id = ?", (proj["id"],)):
            _remove_file(tx, store, row, by)
            removed.append(row["filename"])
        tx.execute("DELETE FROM releases WHERE project_id = ?", (proj["id"],))
        tx.execute("DELETE FROM roles WHERE project_id = ?", (proj["id"],))
        serial = journal.record(tx, proj["name"], None, "remove project", by)
        tx.execute("DELETE FROM projects WHERE id = ?", (proj["id"],))
        outbox.enqueue(tx, cache_keys.change_purges(proj["normalized_name"], new_project=True))
    return Removed(serial, removed)


# -- steps ---------------------------------------------------------------------------------


def _project(tx: Tx, name: str) -> Any:
    proj = packages.get_project(tx, name)
    if proj is None:
        raise NotFoundError(f"no project named {name!r}")
    return proj


def _release(tx: Tx, project: str, version: str) -> tuple[Any, Any]:
    proj = _project(tx, project)
    release = packages.get_release(tx, proj["id"], version)
    if release is None:
        raise NotFoundError(f"project {proj['name']!r} has no release {version!r}")
    return proj, release


def _remove_files(db: Database, store: storage.Storage, filenames: list[str], by: str | None) -> list[str]:
    """Remove each file in its own transaction; the names of those removed."""
    removed = []
    for filename in filenames:
        with db.transaction(write=True) as tx:
            row = tx.one(_FILE_ROW + "WHERE f.filename = ?", (filename,))
            if row is None:  # removed meanwhile
                continue
            _remove_file(tx, store, row, by)
        removed.append(filename)
    return removed


def _remove_file(tx: Tx, store: storage.Storage, row: Any, by: str | None) -> int:
    """Inside ``tx``: delete the row, journal it, queue purges, then delete the objects.

    The objects go last, so that a storage failure (raised as StorageDeleteFailed)
    rolls the whole transaction back and the row stays.
    """
    tx.execute("DELETE FROM files WHERE id = ?", (row["id"],))
    serial = journal.record(tx, row["name"], row["version"], f"remove file {row['filename']}", by)
    outbox.enqueue(tx, cache_keys.change_purges(row["normalized_name"]))
    paths = [row["path"] + METADATA_SUFFIX] if row["metadata_sha256"] else []
    paths.append(row["path"])
    for path in paths:
        try:
            store.delete(path)
        except storage.StorageError as exc:
            raise StorageDeleteFailed(
                f"could not delete {path} ({row['filename']}) from storage: {exc}; "
                f"the file is still in the index, run the command again once the storage is back",
                filename=row["filename"],
                path=path,
            ) from exc
    return serial
