"""What a killed upload leaves behind, and its removal.

An upload killed mid-way (``kill -9`` of a server or worker, a machine that
lost power) can leave its spooled body in ``<data_dir>/tmp`` and, in the store,
the temporaries of a write that never finished (``Storage.stale_temporaries``:
local ``.tmp-*`` files, S3 incomplete multipart uploads and the objects below
``.tmp-uploads/`` of a streamed upload killed before its copy to the final
key, Swift segments that no manifest uses). Only those older than a safe age (``[server]
temporaries_max_age``, longer than any upload takes) are listed, so an upload
in flight is never touched. They are removed when the server starts and by
``cloudpypi fsck --repair``; plain ``fsck`` reports them.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Leftover:
    """One leftover: a spooled body (``temporary`` None) or one of the store's temporaries."""

    #: ``spool`` or the store's backend name.
    where: str
    #: The spool file's path, or the store's name for the temporary.
    name: str
    size: int | None
    #: Seconds since it was last written (None if unknown).
    age: float | None
    temporary: storage.Temporary | None = None

    def __str__(self) -> str:
        size = "" if self.size is None else f"{self.size} bytes, "
        age = "age unknown" if self.age is None else f"left {self.age / 3600:.1f} h ago"
        return f"{self.where} {self.name}: {size}{age}"


def spool_dir(data_dir: str) -> str:
    """Where uploads spool their bodies (pypi.views.upload reads the form into it)."""
    return os.path.join(data_dir, "tmp")


def find(store: storage.Storage | None, spool: str | None, older_than: float) -> Iterator[Leftover]:
    """Spool files and store temporaries last written more than ``older_than`` seconds ago.

    Raises storage.StorageError if the store cannot be listed.
    """
    now = time.time()
    if spool and os.path.isdir(spool):
        for entry in sorted(os.scandir(spool), key=lambda e: e.name):
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if entry.is_file(follow_symlinks=False) and now - st.st_mtime > older_than:
                yield Leftover("spool", entry.path, st.st_size, now - st.st_mtime)
    if store is not None:
        utcnow = datetime.datetime.now(datetime.timezone.utc)
        for temporary in store.stale_temporaries(older_than):
            age = None if temporary.started is None else (utcnow - temporary.started).total_seconds()
            yield Leftover(store.name or type(store).__name__, temporary.name, temporary.size, age, temporary)


def remove(store: storage.Storage | None, leftover: Leftover) -> None:
    """Remove one leftover; raises storage.StorageError (or OSError for a spool file)."""
    if leftover.temporary is None:
        try:
            os.unlink(leftover.name)
        except FileNotFoundError:
            pass
    elif store is not None:
        store.remove_temporary(leftover.temporary)


def clean(
    store: storage.Storage | None, spool: str | None, older_than: float
) -> tuple[list[Leftover], list[str]]:
    """Remove every leftover older than ``older_than`` s: (removed, "name: error" for those that failed)."""
    removed: list[Leftover] = []
    failed: list[str] = []
    try:
        for leftover in find(store, spool, older_than):
            try:
                remove(store, leftover)
            except (OSError, storage.StorageError) as exc:
                failed.append(f"{leftover.name}: {exc}")
            else:
                removed.append(leftover)
    except storage.StorageError as exc:
        failed.append(f"cannot list the store's temporaries: {exc}")
    return removed, failed


def clean_in_background(store: storage.Storage, spool: str, older_than: float) -> threading.Thread:
    """Run :func:`clean` on a daemon thread (a large store takes a while to list); log what it did."""

    def run() -> None:
        try:
            removed, failed = clean(store, spool, older_than)
        except Exception:
            log.exception("cleaning crashed uploads' leftovers failed")
            return
        for leftover in removed:
            log.info("removed a crashed upload's leftover: %s", leftover)
        for problem in failed:
            log.warning("could not remove a crashed upload's leftover: %s", problem)

    thread = threading.Thread(target=run, name="cloudpypi-leftovers", daemon=True)
    thread.start()
    return thread
