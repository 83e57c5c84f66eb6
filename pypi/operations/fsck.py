"""Compare what the database references with what the storage holds (``cloudpypi fsck``).

Four kinds of problem are found:

- ``missing``: a file row (or a wheel's ``.metadata``) whose object is not stored;
- ``orphan``: an object under ``packages/`` that no file row references (an
  upload whose commit failed, or a delete interrupted between its steps);
- ``size``: a stored object whose size differs from the database's;
- ``sha256`` (only when asked to read every object): content whose SHA-256
  differs from the database's;
- ``temporary`` (when ``temporaries_age`` is given): what a killed upload left
  behind, older than that age (see pypi.operations.leftovers): a spooled body
  in data_dir/tmp, a local ``.tmp-*`` file, an S3 incomplete multipart upload,
  Swift segments no manifest uses.

Repair removes orphans and such temporaries only; it never touches an object a row references.

The store's listing and the file rows (read in pages) are walked together in path order, and
each problem is handed to ``on_problem`` as it is found: the report keeps counts and the first
``PROBLEMS_KEPT`` problems, so memory stays flat at any size. Candidates are looked at again in
batches of ``BATCH`` before they are reported, so that what changes while fsck runs is not
taken for a problem:

- an orphan candidate is looked up in the database again (one query per batch): a row
  committed since the rows were read makes it referenced. Repair looks once more just before
  it deletes one, and keeps an orphan younger than ``min_age``: an upload may be about to
  commit its row;
- a missing candidate needs no second look when no change was committed since fsck started
  (the serial has not moved): every row it read was committed before the listing began, and
  an upload stores its objects before it commits. Otherwise the rows of the batch are read
  again (one query): a row removed since is no problem, and an object whose project changed
  since fsck started (``last_serial``; an upload that committed while the listing ran) is
  looked at with ``stat``. The first ``STAT_FIRST`` missing candidates are looked at with
  ``stat`` in any case, since a listing may lag behind writes (Swift's container listings are
  updated asynchronously).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import NamedTuple

import storage
from pypi.index import journal
from pypi.index.db import Database, Tx
from pypi.index.objects import METADATA_SUFFIX, PACKAGES_PREFIX, StoredObject, file_path_of
from pypi.index.stream import referenced_objects
from pypi.operations import leftovers
from pypi.operations.copy_objects import sha256_of

MISSING = "missing"
ORPHAN = "orphan"
SIZE = "size"
SHA256 = "sha256"
ERROR = "error"
TEMPORARY = "temporary"
#: Each kind, with how the summary names it.
_LABELS = (
    (MISSING, "missing"),
    (ORPHAN, "orphans"),
    (SIZE, "size mismatches"),
    (SHA256, "sha256 mismatches"),
    (ERROR, "unreadable"),
    (TEMPORARY, "stale temporaries"),
)
#: Problems repair removes.
_REMOVABLE = (ORPHAN, TEMPORARY)
#: Problems a report keeps (every one is handed to ``on_problem`` as it is found).
PROBLEMS_KEPT = 1000
#: Candidates looked at again together: one read of the serial (and, if it moved, of their rows).
BATCH = 10_000
#: Missing candidates looked at with ``stat`` whatever the serials say (a listing may lag).
STAT_FIRST = 1000
#: Paths per ``IN (...)`` list (SQLite's limit on parameters is 999 in old builds).
_IN_LIST = 500


class Problem(NamedTuple):
    kind: str
    path: str
    detail: str
    #: The file the object belongs to (None for an orphan).
    filename: str | None = None
    #: Whether repair removed it.
    removed: bool = False

    def __str__(self) -> str:
        return f"{self.kind:<8} {self.path}: {self.detail}"


@dataclass
class FsckReport:
    #: Objects the database references, and objects found under packages/.
    referenced: int = 0
    stored: int = 0
    #: Problems found, per kind.
    counts: dict[str, int] = field(default_factory=lambda: {kind: 0 for kind, _ in _LABELS})
    #: Problems repair removed, per kind.
    removed_counts: dict[str, int] = field(default_factory=lambda: {kind: 0 for kind in _REMOVABLE})
    #: The first PROBLEMS_KEPT problems, in the order found.
    problems: list[Problem] = field(default_factory=list)
    #: The first PROBLEMS_KEPT paths repair removed.
    removed: list[str] = field(default_factory=list)
    #: Anything to say besides the problems (printed to standard error by the command).
    notes: list[str] = field(default_factory=list)

    def add(self, problem: Problem) -> None:
        self.counts[problem.kind] += 1
        if len(self.problems) < PROBLEMS_KEPT:
            self.problems.append(problem)
        if problem.removed:
            self.removed_counts[problem.kind] += 1
            if len(self.removed) < PROBLEMS_KEPT:
                self.removed.append(problem.path)

    def count(self, kind: str) -> int:
        """How many problems of ``kind`` were found (all of them, not only those kept)."""
        return self.counts[kind]

    def of_kind(self, kind: str) -> list[Problem]:
        """The kept problems of ``kind`` (all of them when fewer than PROBLEMS_KEPT were found)."""
        return [p for p in self.problems if p.kind == kind]

    @property
    def unresolved(self) -> int:
        """Problems still there after repair (every problem when not repairing)."""
        return sum(self.counts.values()) - sum(self.removed_counts.values())

    @property
    def clean(self) -> bool:
        return not self.unresolved

    def summary(self) -> str:
        counts = ", ".join(f"{self.counts[kind]} {label}" for kind, label in _LABELS)
        removed = "".join(
            f"; {self.removed_counts[kind]} {label} removed"
            for kind, label in _LABELS
            if kind in _REMOVABLE and self.removed_counts[kind]
        )
        state = "clean" if self.clean else f"{self.unresolved} problems"
        return (
            f"fsck: {self.referenced} referenced objects, {self.stored} stored objects: "
            f"{counts}{removed}; {state}"
        )


def check(
    db: Database,
    store: storage.Storage,
    *,
    verify_hashes: bool = False,
    repair: bool = False,
    min_age: float = 3600.0,
    jobs: int = 4,
    now: Callable[[], datetime.datetime] | None = None,
    temporaries_age: float | None = None,
    spool_dir: str | None = None,
    on_problem: Callable[[Problem], None] | None = None,
    stat_first: int = STAT_FIRST,
) -> FsckReport:
    """Check the store against the database; with ``repair``, remove orphans older than ``min_age`` s.

    Each problem is handed to ``on_problem`` as it is found (on the calling thread); the
    report counts them all and keeps the first PROBLEMS_KEPT. With ``temporaries_age``,
    crashed uploads' leftovers older than that (in the store, and in ``spool_dir``) are
    reported too, and removed by ``repair``. Raises storage.StorageError if the store
    cannot be listed.
    """
    now = now or (lambda: datetime.datetime.now(datetime.timezone.utc))
    with db.transaction() as tx:
        since = journal.last_serial(tx)  # before the listing starts: see the module's docstring

    def walk(report: FsckReport, listing: Iterable[storage.ObjectInfo]) -> None:
        args = (since, verify_hashes, jobs, repair, min_age, now, stat_first)
        _Walk(db, store, report, on_problem, *args).run(listing)

    report = FsckReport()
    try:
        walk(report, store.list(PACKAGES_PREFIX))
    except _Unordered:  # a store that lists out of order: sort its whole listing (memory grows)
        first = report
        report = FsckReport()
        for kind in _REMOVABLE:  # what the first walk removed is gone from the new listing
            report.counts[kind] = report.removed_counts[kind] = first.removed_counts[kind]
        report.removed = list(first.removed)
        if sum(first.counts.values()):
            report.notes.append(
                f"the store listed out of order after {sum(first.counts.values())} problems were "
                "reported: its listing was sorted and checked again, and the problems reported "
                "since replace those before"
            )
        listing = sorted(store.list(PACKAGES_PREFIX), key=lambda info: info.path)
        walk(report, listing)

    if temporaries_age is not None:
        for leftover in leftovers.find(store, spool_dir, temporaries_age):
            detail = f"left by an upload that never finished ({leftover})"
            removed = False
            if repair:
                try:
                    leftovers.remove(store, leftover)
                except (OSError, storage.StorageError) as exc:
                    detail += f"; could not remove it: {exc}"
                else:
                    removed = True
                    detail += "; removed"
            _emit(report, on_problem, Problem(TEMPORARY, leftover.name, detail, removed=removed))
    return report


def _emit(report: FsckReport, on_problem: Callable[[Problem], None] | None, problem: Problem) -> None:
    report.add(problem)
    if on_problem is not None:
        on_problem(problem)


class _Unordered(Exception):
    pass


class _Walk:
    """One walk of the referenced objects beside the store's listing (see the module's docstring)."""

    def __init__(
        self,
        db: Database,
        store: storage.Storage,
        report: FsckReport,
        on_problem: Callable[[Problem], None] | None,
        since: int,
        verify_hashes: bool,
        jobs: int,
        repair: bool,
        min_age: float,
        now: Callable[[], datetime.datetime],
        stat_first: int,
    ) -> None:
        self.db = db
        self.store = store
        self.report = report
        self.on_problem = on_problem
        self.since = since
        self.verify_hashes = verify_hashes
        self.jobs = max(1, jobs)
        self.repair = repair
        self.min_age = min_age
        self.now = now
        self.stat_budget = stat_first
        #: Candidates not yet looked at again, in path order: (kind, object or None, listing entry or None).
        self.pending: list[tuple[str, StoredObject | None, storage.ObjectInfo | None]] = []
        self.hashing: set[Future[Problem | None]] = set()

    def emit(self, problem: Problem) -> None:
        _emit(self.report, self.on_problem, problem)

    def run(self, listing: Iterable[storage.ObjectInfo]) -> None:
        pending = self.pending
        entries = iter(listing)
        referenced = stored = 0
        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="fsck") as pool:
            self.pool = pool
            try:
                current = next(entries, None)
                for obj in referenced_objects(self.db, with_metadata=False):
                    referenced += 1
                    path = obj.path
                    while current is not None and current.path < path:  # not referenced
                        stored += 1
                        pending.append((ORPHAN, None, current))
                        current = _next(entries, current)
                    if current is not None and current.path == path:
                        stored += 1
                        if obj.size is not None and current.size != obj.size:
                            pending.append((SIZE, obj, current))
                        elif self.verify_hashes:
                            self.hash(obj)
                        current = _next(entries, current)
                    else:
                        pending.append((MISSING, obj, None))
                    if len(pending) >= BATCH:
                        self.flush()
                while current is not None:
                    stored += 1
                    pending.append((ORPHAN, None, current))
                    current = _next(entries, current)
                    if len(pending) >= BATCH:
                        self.flush()
                self.flush()
            finally:
                self.report.referenced += referenced
                self.report.stored += stored
            self.collect(self.hashing)

    # -- hashing ---------------------------------------------------------------------------

    def hash(self, obj: StoredObject) -> None:
        self.hashing.add(self.pool.submit(_hash_problem, self.store, obj))
        if len(self.hashing) >= 4 * self.jobs:  # a bounded window: memory stays flat
            done, self.hashing = wait(self.hashing, return_when=FIRST_COMPLETED)
            self.collect(done)

    def collect(self, futures: Iterable[Future[Problem | None]]) -> None:
        for future in futures:
            problem = future.result()
            if problem is not None:
                self.emit(problem)

    # -- the second look -------------------------------------------------------------------

    def flush(self) -> None:
        """Look at the pending candidates again and report those still wrong, in path order."""
        batch = list(self.pending)
        self.pending.clear()
        if not batch:
            return
        missing = [obj.path for kind, obj, _ in batch if kind == MISSING]  # type: ignore[union-attr]
        orphans = [info.path for kind, _, info in batch if kind == ORPHAN]  # type: ignore[union-attr]
        rows: dict[str, tuple[bool, int]] | None = None
        if missing:
            with self.db.transaction() as tx:
                if journal.last_serial(tx) != self.since:  # something was committed since fsck started
                    rows = _rows_now(tx, missing)
        referenced = _referenced_now(self.db, orphans) if orphans else set()
        for kind, obj, info in batch:
            if kind == MISSING:
                assert obj is not None
                self.missing(obj, rows)
            elif kind == SIZE:
                assert obj is not None and info is not None
                self.emit(_size_problem(obj, info))
            else:
                assert info is not None
                if info.path not in referenced:
                    self.orphan(info)

    def missing(self, obj: StoredObject, rows: dict[str, tuple[bool, int]] | None) -> None:
        look = False
        if rows is not None:  # changes were committed since fsck started
            row = rows.get(file_path_of(obj.path))
            if row is None or (obj.is_metadata and not row[0]):
                return  # removed since it was read: no longer referenced
            look = row[1] > self.since  # its project changed: maybe stored after the listing passed
        if not look and self.stat_budget > 0:
            self.stat_budget -= 1
            look = True
        if look:
            info = _stat(self.store, obj.path)
            if info is not None:  # stored after the listing passed it
                if obj.size is not None and info.size != obj.size:
                    self.emit(_size_problem(obj, info))
                elif self.verify_hashes:
                    self.hash(obj)
                return
        problem = _make_problem((MISSING, obj.path, _missing_detail(obj), obj.filename, False))
        self.report.add(problem)  # (emit, inlined: once per object when the store is empty)
        if self.on_problem is not None:
            self.on_problem(problem)

    def orphan(self, info: storage.ObjectInfo) -> None:
        detail = f"{info.size} bytes; no file row references it"
        removed = False
        if self.repair:
            age = _age(info, self.now())
            if age is not None and age < self.min_age:
                detail += (
                    f"; kept: stored {age:.0f} s ago, an upload may be about to commit it "
                    f"(orphans younger than {self.min_age:.0f} s are not removed)"
                )
            elif not _referenced_now(self.db, [info.path]):  # once more, right before deleting
                try:
                    self.store.delete(info.path)
                except storage.StorageError as exc:
                    detail += f"; could not remove it: {exc}"
                else:
                    removed = True
                    detail += "; removed"
            else:
                return  # a row references it now
        self.emit(Problem(ORPHAN, info.path, detail, removed=removed))


_make_problem = Problem._make  # tuple.__new__: faster than Problem(...) for millions


def _next(entries: Iterator[storage.ObjectInfo], previous: storage.ObjectInfo) -> storage.ObjectInfo | None:
    """The listing's next entry; _Unordered when it sorts before ``previous`` (stores list in
    path order: S3, Swift, local folders; the contract does not promise it)."""
    entry = next(entries, None)
    if entry is not None and entry.path < previous.path:
        raise _Unordered(entry.path)
    return entry


def _size_problem(obj: StoredObject, info: storage.ObjectInfo) -> Problem:
    return Problem(
        SIZE,
        obj.path,
        f"stored object is {info.size} bytes, the database says {obj.size} ({obj.filename})",
        obj.filename,
    )


def _missing_detail(obj: StoredObject) -> str:
    if obj.is_metadata:
        return f"the METADATA of {obj.filename} is not stored"
    return f"{obj.filename} is not stored"


def _stat(store: storage.Storage, path: str) -> storage.ObjectInfo | None:
    try:
        return store.stat(path)
    except storage.NotFound:
        return None


def _hash_problem(store: storage.Storage, obj: StoredObject) -> Problem | None:
    try:
        digest, size = sha256_of(store, obj.path)
    except storage.NotFound:
        return Problem(MISSING, obj.path, _missing_detail(obj), obj.filename)
    except storage.StorageError as exc:
        return Problem(ERROR, obj.path, f"could not read it: {exc}", obj.filename)
    if digest != obj.sha256:
        return Problem(
            SHA256,
            obj.path,
            f"stored content has sha256 {digest} ({size} bytes), the database says {obj.sha256} "
            f"({obj.filename})",
            obj.filename,
        )
    return None


def _chunks(paths: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(paths), _IN_LIST):
        yield paths[start : start + _IN_LIST]


def _rows_now(tx: Tx, object_paths: list[str]) -> dict[str, tuple[bool, int]]:
    """file path -> (whether it has a .metadata, its project's last serial), for the rows there now."""
    found: dict[str, tuple[bool, int]] = {}
    paths = sorted({file_path_of(p) for p in object_paths})
    for chunk in _chunks(paths):
        for row in tx.all(
            "SELECT f.path, f.metadata_sha256, p.last_serial FROM files f "
            "JOIN releases r ON r.id = f.release_id JOIN projects p ON p.id = r.project_id "
            f"WHERE f.path IN ({', '.join('?' * len(chunk))})",
            chunk,
        ):
            found[row["path"]] = (bool(row["metadata_sha256"]), int(row["last_serial"]))
    return found


def _referenced_now(db: Database, object_paths: list[str]) -> set[str]:
    """Those of ``object_paths`` a file row references now (a row may have been committed
    since the rows were read), in one transaction."""
    paths = sorted({file_path_of(p) for p in object_paths})
    rows: dict[str, bool] = {}
    with db.transaction() as tx:
        for chunk in _chunks(paths):
            for row in tx.all(
                f"SELECT path, metadata_sha256 FROM files WHERE path IN ({', '.join('?' * len(chunk))})",
                chunk,
            ):
                rows[row["path"]] = bool(row["metadata_sha256"])
    return {
        p
        for p in object_paths
        if file_path_of(p) in rows and (not p.endswith(METADATA_SUFFIX) or rows[file_path_of(p)])
    }


def _age(info: storage.ObjectInfo, now: datetime.datetime) -> float | None:
    if info.last_modified is None:
        return None
    modified = info.last_modified
    if modified.tzinfo is None:
        modified = modified.replace(tzinfo=datetime.timezone.utc)
    return (now - modified).total_seconds()
