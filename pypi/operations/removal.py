"""Yanking releases, and deleting files, releases and projects.

Every change records its journal entry and CDN purges through
``pypi.index.changes.record`` in the same transaction (which moves the
project's serial, so cached pages re-render).

A delete removes one file at a time, in one write transaction each: delete
the row, commit, and only then delete the stored objects (the ``.metadata``,
then the file). So no row ever points to a missing object, whatever fails: if
the commit fails, the objects are untouched; if the storage then refuses a
delete, the object is left as an orphan (listed in ``Removed.leftovers``),
which ``cloudpypi fsck --repair`` removes. A release or project row goes last,
once its files are gone. A deleted file's name stays in ``file_registry``: it
can never be uploaded again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import storage
from pypi.index import changes, packages
from pypi.index.db import Database, Tx
from pypi.index.objects import METADATA_SUFFIX

log = logging.getLogger(__name__)


class RemovalError(Exception):
    """The change cannot be made; the message says why."""


class NotFoundError(RemovalError):
    """No such project, release or file."""


class StorageDeleteFailed(RemovalError):
    """The storage refused to delete an object (kept for callers; deletes now leave orphans instead)."""

    def __init__(self, message: str, *, filename: str, path: str) -> None:
        super().__init__(message)
        self.filename = filename
        self.path = path


@dataclass(frozen=True)
class Removed:
    """What a delete removed, and the serial of its last journal entry."""

    serial: int
    files: list[str] = field(default_factory=list)
    #: "path: error" for each object the storage refused to delete after the commit (orphans for fsck).
    leftovers: list[str] = field(default_factory=list)


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
        change = changes.record(tx, proj["name"], release["version"], "yank release", by)
    return change.serial


def unyank(db: Database, project: str, version: str, *, by: str | None = None) -> int:
    """Undo a yank; return the journal serial. Raises NotFoundError."""
    with db.transaction(write=True) as tx:
        proj, release = _release(tx, project, version)
        tx.execute("UPDATE releases SET yanked = 0, yanked_reason = '' WHERE id = ?", (release["id"],))
        change = changes.record(tx, proj["name"], release["version"], "unyank release", by)
    return change.serial


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
    NotFoundError; objects the storage refuses to delete are in ``leftovers``.
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
        change, paths = _remove_file(tx, row, by)
    return Removed(change.serial, [filename], _delete_objects(store, paths))


def delete_release(
    db: Database, store: storage.Storage, project: str, version: str, *, by: str | None = None
) -> Removed:
    """Delete a release: each of its files, then the release row. Raises NotFoundError."""
    with db.transaction() as tx:
        _, release = _release(tx, project, version)
        names = [f["filename"] for f in packages.release_files(tx, release["id"])]
    removed, leftovers = _remove_files(db, store, names, by)
    paths: list[str] = []
    with db.transaction(write=True) as tx:
        proj, release = _release(tx, project, version)
        # Files uploaded since the listing above go in this transaction.
        for row in tx.all(_FILE_ROW + "WHERE f.release_id = ?", (release["id"],)):
            paths += _remove_file(tx, row, by)[1]
            removed.append(row["filename"])
        tx.execute("DELETE FROM releases WHERE id = ?", (release["id"],))
        change = changes.record(tx, proj["name"], release["version"], "remove release", by)
    return Removed(change.serial, removed, leftovers + _delete_objects(store, paths))


def delete_project(db: Database, store: storage.Storage, project: str, *, by: str | None = None) -> Removed:
    """Delete a project: every file, then its releases, roles and the project row.

    /simple/ is purged too. Raises NotFoundError.
    """
    with db.transaction() as tx:
        proj = _project(tx, project)
        names = [f["filename"] for f in packages.project_files(tx, proj["id"])]
    removed, leftovers = _remove_files(db, store, names, by)
    paths: list[str] = []
    with db.transaction(write=True) as tx:
        proj = _project(tx, project)
        for row in tx.all(_FILE_ROW + "WHERE r.project_id = ?", (proj["id"],)):
            paths += _remove_file(tx, row, by)[1]
            removed.append(row["filename"])
        tx.execute("DELETE FROM releases WHERE project_id = ?", (proj["id"],))
        tx.execute("DELETE FROM roles WHERE project_id = ?", (proj["id"],))
        change = changes.record(tx, proj["name"], None, "remove project", by, new_project=True)
        tx.execute("DELETE FROM projects WHERE id = ?", (proj["id"],))
    return Removed(change.serial, removed, leftovers + _delete_objects(store, paths))


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


def _remove_files(
    db: Database, store: storage.Storage, filenames: list[str], by: str | None
) -> tuple[list[str], list[str]]:
    """Remove each file in its own transaction, objects after its commit; (names removed, leftovers)."""
    removed: list[str] = []
    leftovers: list[str] = []
    for filename in filenames:
        with db.transaction(write=True) as tx:
            row = tx.one(_FILE_ROW + "WHERE f.filename = ?", (filename,))
            if row is None:  # removed meanwhile
                continue
            _, paths = _remove_file(tx, row, by)
        removed.append(filename)
        leftovers += _delete_objects(store, paths)
    return removed, leftovers


def _remove_file(tx: Tx, row: Any, by: str | None) -> tuple[changes.Change, list[str]]:
    """Inside ``tx``: delete the row and record the change; the object paths to delete after commit."""
    tx.execute("DELETE FROM files WHERE id = ?", (row["id"],))
    change = changes.record(tx, row["name"], row["version"], f"remove file {row['filename']}", by)
    paths = [row["path"] + METADATA_SUFFIX] if row["metadata_sha256"] else []
    paths.append(row["path"])
    return change, paths


def _delete_objects(store: storage.Storage, paths: list[str]) -> list[str]:
    """Delete objects whose rows are committed gone; "path: error" for each the storage refused."""
    leftovers = []
    for path in paths:
        try:
            store.delete(path)
        except storage.StorageError as exc:
            log.warning(
                "could not delete %s from storage (an orphan now; fsck --repair removes it): %s", path, exc
            )
            leftovers.append(f"{path}: {exc}")
    return leftovers
