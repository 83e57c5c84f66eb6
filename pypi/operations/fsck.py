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
The store's listing and the file rows (read in pages) are walked together in
path order, so memory stays flat at any size; each candidate is checked again
before it is reported, so an upload that commits while fsck runs is not
mistaken for a problem; an orphan younger than ``min_age`` is
reported but kept, since an upload may be about to commit its row.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import storage
from pypi.index import packages
from pypi.index.db import Database
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
#: Problems repair removes.
_REMOVABLE = (ORPHAN, TEMPORARY)


@dataclass(frozen=True)
class Problem:
    kind: str
    path: str
    detail: str
    #: The file the object belongs to (None for an orphan).
    filename: str | None = None

    def __str__(self) -> str:
        return f"{self.kind:<8} {self.path}: {self.detail}"


@dataclass
class FsckReport:
    #: Objects the database references, and objects found under packages/.
    referenced: int = 0
    stored: int = 0
    problems: list[Problem] = field(default_factory=list)
    #: Orphans removed by repair.
    removed: list[str] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]

    @property
    def unresolved(self) -> list[Problem]:
        """Problems still there after repair (every problem when not repairing)."""
        gone = set(self.removed)
        return [p for p in self.problems if not (p.kind in _REMOVABLE and p.path in gone)]

    @property
    def clean(self) -> bool:
        return not self.unresolved

    def summary(self) -> str:
        counts = ", ".join(
            f"{len(self.of_kind(kind))} {label}"
            for kind, label in (
                (MISSING, "missing"),
                (ORPHAN, "orphans"),
                (SIZE, "size mismatches"),
                (SHA256, "sha256 mismatches"),
                (ERROR, "unreadable"),
                (TEMPORARY, "stale temporaries"),
            )
        )
        gone = set(self.removed)
        removed = "".join(
            f"; {n} {label} removed"
            for n, label in (
                (sum(p.path in gone for p in self.of_kind(ORPHAN)), "orphans"),
                (sum(p.path in gone for p in self.of_kind(TEMPORARY)), "stale temporaries"),
            )
            if n
        )
        state = "clean" if self.clean else f"{len(self.unresolved)} problems"
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
) -> FsckReport:
    """Check the store against the database; with ``repair``, remove orphans older than ``min_age`` s.

    With ``temporaries_age``, crashed uploads' leftovers older than that (in the
    store, and in ``spool_dir``) are reported too, and removed by ``repair``.
    Raises storage.StorageError if the store cannot be listed.
    """
    now = now or (lambda: datetime.datetime.now(datetime.timezone.utc))
    try:
        report, orphans = _compare(db, store, store.list(PACKAGES_PREFIX), verify_hashes, jobs)
    except _Unordered:  # a store that lists out of order: sort its whole listing (memory grows)
        listing = sorted(store.list(PACKAGES_PREFIX), key=lambda info: info.path)
        report, orphans = _compare(db, store, listing, verify_hashes, jobs)
    orphans = _still_orphans(db, orphans)
    for info in orphans:
        detail = f"{info.size} bytes; no file row references it"
        if repair:
            age = _age(info, now())
            if age is not None and age < min_age:
                detail += (
                    f"; kept: stored {age:.0f} s ago, an upload may be about to commit it "
                    f"(orphans younger than {min_age:.0f} s are not removed)"
                )
            elif _still_orphans(db, [info]):
                try:
                    store.delete(info.path)
                except storage.StorageError as exc:
                    detail += f"; could not remove it: {exc}"
                else:
                    report.removed.append(info.path)
                    detail += "; removed"
        report.problems.append(Problem(ORPHAN, info.path, detail))

    if temporaries_age is not None:
        for leftover in leftovers.find(store, spool_dir, temporaries_age):
            detail = f"left by an upload that never finished ({leftover})"
            if repair:
                try:
                    leftovers.remove(store, leftover)
                except (OSError, storage.StorageError) as exc:
                    detail += f"; could not remove it: {exc}"
                else:
                    report.removed.append(leftover.name)
                    detail += "; removed"
            report.problems.append(Problem(TEMPORARY, leftover.name, detail))
    return report


def _compare(
    db: Database,
    store: storage.Storage,
    listing: Iterable[storage.ObjectInfo],
    verify_hashes: bool,
    jobs: int,
) -> tuple[FsckReport, list[storage.ObjectInfo]]:
    """Walk the referenced objects and the listing together: the report so far, and orphan candidates."""
    report = FsckReport()
    orphans: list[storage.ObjectInfo] = []
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="fsck") as pool:
        hashing: set[Future[Problem | None]] = set()

        def collect(futures: set[Future[Problem | None]]) -> None:
            for future in futures:
                problem = future.result()
                if problem is not None:
                    report.problems.append(problem)

        for obj, info in _joined(referenced_objects(db), listing, report):
            if obj is None:
                orphans.append(info)
                continue
            if info is None:
                info = _stat(store, obj.path)  # stored after the listing?
            if info is None:
                report.problems.append(Problem(MISSING, obj.path, _missing_detail(obj), obj.filename))
            elif obj.size is not None and info.size != obj.size:
                report.problems.append(
                    Problem(
                        SIZE,
                        obj.path,
                        f"stored object is {info.size} bytes, the database says {obj.size} ({obj.filename})",
                        obj.filename,
                    )
                )
            elif verify_hashes:
                hashing.add(pool.submit(_hash_problem, store, obj))
                if len(hashing) >= 4 * max(1, jobs):  # a bounded window: memory stays flat
                    done, hashing = wait(hashing, return_when=FIRST_COMPLETED)
                    collect(done)
        collect(hashing)
    report.problems.sort(key=lambda p: (p.path, p.kind))
    return report, orphans


def _joined(
    wanted: Iterator[StoredObject], listed: Iterable[storage.ObjectInfo], report: FsckReport
) -> Iterator[tuple[StoredObject | None, storage.ObjectInfo | None]]:
    """Merge the referenced objects (in path order) with the store's listing: (object, its listing
    entry or None) and (None, an unreferenced entry). Counts both sides into ``report``.

    Stores list in path order (S3, Swift, local folders); _Unordered is raised when one does not.
    """
    stream = _ordered(iter(listed), "")
    current = next(stream, None)
    for obj in wanted:
        report.referenced += 1
        while current is not None and current.path < obj.path:
            report.stored += 1
            yield None, current
            current = next(stream, None)
        if current is not None and current.path == obj.path:
            report.stored += 1
            yield obj, current
            current = next(stream, None)
        else:
            yield obj, None
    while current is not None:
        report.stored += 1
        yield None, current
        current = next(stream, None)


class _Unordered(Exception):
    pass


def _ordered(entries: Iterator[storage.ObjectInfo], previous: str) -> Iterator[storage.ObjectInfo]:
    for info in entries:
        if info.path < previous:
            raise _Unordered(info.path)
        previous = info.path
        yield info


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


def _still_orphans(db: Database, candidates: list[storage.ObjectInfo]) -> list[storage.ObjectInfo]:
    """The candidates that no row references now (a row may have been committed since the listing)."""
    if not candidates:
        return []
    left = []
    with db.transaction() as tx:
        for info in candidates:
            row = packages.file_by_path(tx, file_path_of(info.path))
            if row is None:
                left.append(info)
            elif info.path.endswith(METADATA_SUFFIX) and not row["metadata_sha256"]:
                left.append(info)
    return left


def _age(info: storage.ObjectInfo, now: datetime.datetime) -> float | None:
    if info.last_modified is None:
        return None
    modified = info.last_modified
    if modified.tzinfo is None:
        modified = modified.replace(tzinfo=datetime.timezone.utc)
    return (now - modified).total_seconds()
