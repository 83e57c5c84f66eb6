"""The mirror engine: one run brings the index in line with upstream.

Per project: fetch upstream's page, filter it, download what is missing
(verified, stored), then commit the rows in one transaction. An interrupted
run leaves at most objects no row references (each one complete: storage puts
are atomic); the next run downloads what it lacks again and commits it.
Incremental by serial when upstream offers XML-RPC's changelog.
"""

from __future__ import annotations

import collections
import functools
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    as_completed,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from packaging.utils import canonicalize_name

import storage
from pypi.config import UpstreamSettings
from pypi.index import packages
from pypi.index.db import Database, DatabaseError, utcnow
from pypi.index.objects import METADATA_SUFFIX
from pypi.upstream import records
from pypi.upstream.client import HashMismatch, UpstreamClient, UpstreamError
from pypi.upstream.fetch import fetch_and_store
from pypi.upstream.filters import Filters

BY = "mirror"
#: Projects per worker process queued or waiting for their commit (see _sync_in_processes).
WINDOW = 16


@dataclass
class Report:
    projects: int = 0
    added: int = 0
    removed: int = 0
    yanked: int = 0
    removed_projects: int = 0
    bytes: int = 0
    #: Names that exist locally and so were not taken from upstream (dependency confusion).
    shadowed: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    incremental: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        kind = "incremental" if self.incremental else "full"
        lines = [
            f"{kind} sync in {self.seconds:.1f} s: {self.projects} projects checked, "
            f"{self.added} files added ({self.bytes / 1e6:.1f} MB), {self.removed} removed, "
            f"{self.yanked} yank changes, {self.removed_projects} projects removed"
        ]
        if self.shadowed:
            lines.append(
                f"{len(self.shadowed)} local projects not taken from upstream (allow_shadowing to allow): "
                + ", ".join(sorted(self.shadowed)[:20])
            )
        if self.failures:
            lines.append(f"{len(self.failures)} FAILED:")
            lines.extend(f"  {f}" for f in self.failures)
        else:
            lines.append("in sync")
        return "\n".join(lines)


@dataclass
class Fetched:
    """What one project's download step found and stored (sent back from a worker process)."""

    found: bool
    serial: int = 0
    wanted: list = field(default_factory=list)
    missing: int = 0
    #: filename -> the verified, stored (durable) file.
    stored: dict[str, records.StoredFile] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def client_for(settings: UpstreamSettings, *, connections: int = 16) -> UpstreamClient:
    return UpstreamClient(
        settings.url,
        timeout=settings.timeout,
        username=settings.username,
        password=settings.password,
        connections=connections,
        file_hosts=settings.file_hosts,
    )


class Mirror:
    def __init__(
        self,
        db: Database,
        store: storage.Storage,
        settings: UpstreamSettings,
        *,
        tmp_dir: str,
        jobs: int = 4,
        dry_run: bool = False,
        progress: Callable[[str], None] | None = None,
        client: UpstreamClient | None = None,
        processes: int = 0,
        open_store: Callable[[], storage.Storage] | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.settings = settings
        self.filters = Filters.from_settings(settings)
        self.jobs = max(1, jobs)
        self.client = client or client_for(settings, connections=self.jobs)
        self.tmp_dir = tmp_dir
        self.dry_run = dry_run
        self.progress = progress or (lambda line: None)
        self.report = Report()
        self._lock = threading.Lock()
        #: With 2 or more (and ``open_store``, and fork): downloads run in that many worker
        #: processes, one project at a time each, and this process commits what they stored.
        self.processes = processes if open_store is not None and _can_fork() else 0
        self._open_store = open_store

    # -- the run -----------------------------------------------------------
    def run(self) -> Report:
        started = time.monotonic()
        try:
            self._run()
        except UpstreamError as exc:
            self.report.failures.append(f"upstream: {exc}")
        self.report.seconds = time.monotonic() - started
        return self.report

    def _run(self) -> None:
        with self.db.transaction() as tx:
            state = tx.one(
                "SELECT last_serial, settings FROM upstream_state WHERE upstream = ?", (self.settings.url,)
            )
            local = {
                r["normalized_name"]: r
                for r in tx.all("SELECT name, normalized_name, origin, upstream_serial FROM projects")
            }
        fingerprint = self._fingerprint()
        same_settings = state is not None and state["settings"] == fingerprint
        since = int(state["last_serial"]) if same_settings else 0
        newest = self.client.last_serial()
        todo: dict[str, int] = {}
        changed = self.client.changed_since(since) if since and newest is not None else None
        if changed is not None:
            self.report.incremental = True
            names, newest = changed
            todo = {n: 0 for n in names if self.filters.wants_project(n)}
        else:
            listing = self.client.list_projects()
            for name, serial in listing.items():
                if not self.filters.wants_project(name):
                    continue
                row = local.get(name)
                if same_settings and row is not None and serial and int(row["upstream_serial"]) == serial:
                    continue  # unchanged since the last sync
                todo[name] = serial
            # Projects upstream no longer has, or the filters no longer want.
            for name, row in local.items():
                if row["origin"] == records.MIRROR and (
                    name not in listing or not self.filters.wants_project(name)
                ):
                    self._remove_project(name)
        total = len(todo)
        self.progress(f"{total} projects to sync from {self.settings.url}")
        if self.processes > 1:
            self._sync_in_processes(todo)
        else:
            self._sync_in_threads(todo)
        if newest is not None and not self.report.failures and not self.dry_run:
            with self.db.transaction(write=True) as tx:
                if (
                    tx.execute(
                        "UPDATE upstream_state SET last_serial = ?, settings = ?, updated = ? "
                        "WHERE upstream = ?",
                        (newest, fingerprint, utcnow(), self.settings.url),
                    ).rowcount
                    == 0
                ):
                    tx.execute(
                        "INSERT INTO upstream_state (upstream, last_serial, settings, updated) "
                        "VALUES (?, ?, ?, ?)",
                        (self.settings.url, newest, fingerprint, utcnow()),
                    )

    def _sync_in_threads(self, todo: dict[str, int]) -> None:
        total, done = len(todo), 0
        pool = ThreadPoolExecutor(self.jobs)
        try:
            futures = {pool.submit(self._sync_project, n, s): n for n, s in sorted(todo.items())}
            for future in as_completed(futures):
                name = futures[future]
                done += 1
                self.progress(f"[{done}/{total}] {name}: {self._outcome(name, future.result)}")
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: finish what runs, start nothing
            raise
        pool.shutdown()

    def _sync_in_processes(self, todo: dict[str, int]) -> None:
        """Each worker process (forked: nothing to import) downloads, verifies and stores one
        project at a time with its own connection and store; this process reads what each
        project has before, and commits each project's rows when its worker is done. Worker
        processes share no interpreter lock: 8 threads of one process spent more time handing
        that lock over than working. At most WINDOW projects per process are
        queued or waiting for their commit at once (a busy parent does not stall the workers).
        The workers do not wait for their objects to be durable: a thread of this process
        makes those of every project that finished meanwhile durable at once (one flush of
        the local disk for many projects) while this thread commits the rows of the projects
        whose objects already are (groups in the order they finished)."""
        total, done = len(todo), 0
        pool = ProcessPoolExecutor(
            self.processes,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_start_worker,
            initargs=(self,),
        )
        running: dict[Future, tuple[str, int, str | None]] = {}
        #: Finished projects whose objects the syncer thread is making durable, oldest first.
        syncing: collections.deque[tuple[Future, list[tuple[Future, str, int, str | None]]]]
        syncing = collections.deque()
        syncer = ThreadPoolExecutor(1, thread_name_prefix="cloudpypi-mirror-sync")
        queue = iter(sorted(todo.items()))

        def pending() -> int:
            return len(running) + sum(len(group) for _sync, group in syncing)

        def step() -> None:
            """Wait for a project's worker or a group's sync; store, then commit: the projects
            that finished go to the syncer, those whose objects are durable are committed."""
            nonlocal done
            ready = wait({*running, *(sync for sync, _group in syncing)}, return_when=FIRST_COMPLETED).done
            finished = [future for future in ready if future in running]
            if finished:
                group = [(future, *running.pop(future)) for future in finished]
                results = [future.result() for future in finished if future.exception() is None]
                syncing.append((syncer.submit(self._sync_stored, results), group))
            while syncing and syncing[0][0].done():
                sync, group = syncing.popleft()
                unsynced = sync.result()
                for future, name, serial, origin in group:
                    done += 1
                    commit = functools.partial(self._commit_synced, name, serial, origin, future, unsynced)
                    self.progress(f"[{done}/{total}] {name}: {self._outcome(name, commit)}")

        try:
            for name, serial in queue:
                prepared = self._prepare(name)
                if isinstance(prepared, str):
                    done += 1
                    self.progress(f"[{done}/{total}] {name}: {prepared}")
                    continue
                normalized, origin, existing = prepared
                try:
                    future = pool.submit(_worker_download, normalized, existing)
                except BrokenProcessPool:  # a worker died: the pool takes no more work
                    self._fail(f"{normalized}: not synced, the worker processes died")
                    continue
                running[future] = (normalized, serial, origin)
                while pending() >= WINDOW * self.processes:
                    step()
            while running or syncing:
                step()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: finish what runs, start nothing
            syncer.shutdown(wait=True)  # what it made durable is not committed: orphans, fsck lists them
            raise
        pool.shutdown()
        syncer.shutdown()

    def _sync_stored(self, results: list[Fetched]) -> storage.StorageError | None:
        """Make the objects the workers stored for ``results`` durable at once; the error when
        the store could not (then none of them is committed)."""
        paths = [
            p
            for fetched in results
            for stored in fetched.stored.values()
            for p in (stored.path, stored.path + METADATA_SUFFIX if stored.metadata_sha256 else None)
            if p is not None
        ]
        try:
            self.store.sync(paths)
        except storage.StorageError as exc:
            return exc
        return None

    def _commit_synced(
        self,
        name: str,
        serial: int,
        origin: str | None,
        future: Future,
        unsynced: storage.StorageError | None,
    ) -> str:
        """``_commit`` of a worker's result, unless its objects could not be made durable."""
        fetched = future.result()
        if unsynced is not None:
            for failure in fetched.failures:
                self._fail(failure)
            self._delete_unreferenced([s.path for s in fetched.stored.values()])
            raise unsynced
        return self._commit(name, serial, origin, fetched)

    def _outcome(self, name: str, result: Callable[[], str]) -> str:
        """The progress line of one project's sync: ``result()``'s, or FAILED with the reason
        kept for the summary."""
        try:
            return result()
        except (UpstreamError, DatabaseError, storage.StorageError) as exc:
            self._fail(f"{name}: {exc}")
        except BrokenProcessPool:
            self._fail(f"{name}: its worker process died")
        return "FAILED"

    def _fingerprint(self) -> str:
        """The settings that choose what is taken; when they change, the next run is a full one."""
        s = self.settings
        return repr(
            (s.projects, s.exclude, s.allow_shadowing, s.prereleases, s.platforms, s.latest, s.max_file_size)
        )

    def _fail(self, message: str) -> None:
        with self._lock:
            self.report.failures.append(message)

    def _remove_project(self, name: str) -> None:
        if self.dry_run:
            self.progress(f"{name}: would remove (gone upstream)")
            return
        with self.db.transaction(write=True) as tx:
            paths = records.remove_project(tx, name, by=BY)
        self._delete_objects(paths)
        with self._lock:
            self.report.removed_projects += 1
        self.progress(f"{name}: removed (gone upstream)")

    def _sync_project(self, name: str, serial: int) -> str:
        """Sync one project in this process: prepare, download, commit."""
        prepared = self._prepare(name)
        if isinstance(prepared, str):
            return prepared
        normalized, origin, existing = prepared
        return self._commit(normalized, serial, origin, self._download(normalized, existing))

    def _prepare(self, name: str) -> tuple[str, str | None, set[str]] | str:
        """(normalized name, origin, filenames it has), or the line for a project not to sync."""
        normalized = canonicalize_name(name)
        with self.db.transaction() as tx:
            origin = records.origin_of(tx, normalized)
            project = packages.get_project(tx, normalized)
            existing = set(records.upstream_files(tx, project["id"])) if project else set()
        if origin == records.LOCAL and normalized not in {
            canonicalize_name(n) for n in self.settings.allow_shadowing
        }:
            with self._lock:
                self.report.shadowed.append(normalized)
            return "exists locally, not taken from upstream"
        with self._lock:
            self.report.projects += 1
        return normalized, origin, existing

    def _download(self, normalized: str, existing: set[str], *, sync: bool = True) -> Fetched:
        """Upstream's page and the files missing here, each verified and stored (durable when
        this returns; with ``sync=False`` once the caller's ``store.sync`` of them returns); no
        database write. Runs in a worker process with ``processes``."""
        page = self.client.project(normalized)
        if page is None:
            return Fetched(found=False)
        wanted = self.filters.files(page.files)
        missing = [f for f in wanted if f.filename not in existing]
        fetched = Fetched(found=True, serial=page.serial, wanted=wanted, missing=len(missing))
        fetched.failures.extend(f"{normalized}: not taken: {reason}" for reason in page.refused)
        if self.dry_run:
            return fetched
        try:
            # Store, then commit: the batch makes every object durable before it ends (or the
            # parent's store.sync does, before its commit).
            with self.store.batch(sync=sync):
                for f in missing:
                    try:
                        fetched.stored[f.filename] = fetch_and_store(
                            self.client,
                            self.store,
                            f,
                            normalized,
                            self.tmp_dir,
                            max_size=self.settings.max_file_size,
                            max_undeclared=self.settings.max_undeclared_size,
                        )
                    except HashMismatch as exc:
                        fetched.failures.append(f"hash mismatch: {exc}")
                    except (UpstreamError, storage.StorageError) as exc:
                        fetched.failures.append(f"{f.filename}: {exc}")
        except BaseException:
            self._delete_unreferenced([s.path for s in fetched.stored.values()])
            raise
        return fetched

    def _commit(self, normalized: str, serial: int, origin: str | None, fetched: Fetched) -> str:
        """Commit what ``_download`` stored: one transaction for the project's rows."""
        for failure in fetched.failures:
            self._fail(failure)
        if not fetched.found:
            if origin == records.MIRROR:
                self._remove_project(normalized)
                return "removed"
            return "not found upstream"
        if self.dry_run:
            return f"would add {fetched.missing} files"
        stored = fetched.stored
        try:
            with self.db.transaction(write=True) as tx:
                changes = records.apply_page(tx, normalized, records.MIRROR, fetched.wanted, stored, by=BY)
                if not fetched.failures:
                    tx.execute(
                        "UPDATE projects SET upstream_serial = ? WHERE normalized_name = ?",
                        (serial or fetched.serial, normalized),
                    )
        except BaseException:
            self._delete_unreferenced([s.path for s in stored.values()])
            raise
        self._delete_objects(changes.orphaned)
        with self._lock:
            self.report.added += len(changes.added)
            self.report.removed += len(changes.removed)
            self.report.yanked += len(changes.yanked)
            self.report.bytes += sum(stored[n].size for n in changes.added if n in stored)
        return f"+{len(changes.added)} -{len(changes.removed)} yanks {len(changes.yanked)}"

    # -- storage clean-up ---------------------------------------------------
    def _delete_unreferenced(self, paths: list[str]) -> None:
        with self.db.transaction() as tx:
            gone = [p for p in paths if packages.file_by_path(tx, p) is None]
        self._delete_objects([q for p in gone for q in (p, p + ".metadata")])

    def _delete_objects(self, paths: list[str]) -> None:
        for path in paths:
            try:
                self.store.delete(path)
            except storage.StorageError:
                pass  # fsck reports an object left behind


#: The Mirror a worker process works for (set once in each worker, after fork).
_worker: Mirror | None = None


def _can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def _start_worker(mirror: Mirror) -> None:
    """In a new worker process: its own upstream connection and store (none of the parent's
    sockets is used); Ctrl-C is the parent's to handle (it lets running projects finish),
    and the worker ends with its parent."""
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    assert mirror._open_store is not None
    mirror.client = client_for(mirror.settings, connections=1)
    mirror.store = mirror._open_store()
    _worker = mirror


def _worker_download(normalized: str, existing: set[str]) -> Fetched:
    assert _worker is not None
    return _worker._download(normalized, existing, sync=False)  # the parent syncs, then commits


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent ends (else a worker of a killed mirror
    would wait on its task queue for ever)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
