"""The mirror engine: one run brings the index in line with upstream.

Per project: fetch upstream's page, filter it, download what is missing
(verified, stored), then commit the rows in one transaction. An interrupted
run leaves at most objects no row references (each one complete: storage puts
are atomic); the next run downloads what it lacks again and commits it.
Incremental by serial when upstream offers XML-RPC's changelog.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from packaging.utils import canonicalize_name

import storage
from pypi.config import UpstreamSettings
from pypi.index import packages
from pypi.index.db import Database, DatabaseError, utcnow
from pypi.upstream import records
from pypi.upstream.client import HashMismatch, UpstreamClient, UpstreamError
from pypi.upstream.fetch import fetch_and_store
from pypi.upstream.filters import Filters

BY = "mirror"


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


def client_for(settings: UpstreamSettings, *, connections: int = 16) -> UpstreamClient:
    return UpstreamClient(
        settings.url,
        timeout=settings.timeout,
        username=settings.username,
        password=settings.password,
        connections=connections,
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
        done = 0
        pool = ThreadPoolExecutor(self.jobs)
        try:
            futures = {pool.submit(self._sync_project, n, s): n for n, s in sorted(todo.items())}
            for future in as_completed(futures):
                name = futures[future]
                done += 1
                try:
                    line = future.result()
                except (UpstreamError, DatabaseError, storage.StorageError) as exc:
                    self._fail(f"{name}: {exc}")
                    line = "FAILED"
                self.progress(f"[{done}/{total}] {name}: {line}")
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: finish what runs, start nothing
            raise
        pool.shutdown()
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
        page = self.client.project(normalized)
        if page is None:
            if origin == records.MIRROR:
                self._remove_project(normalized)
                return "removed"
            return "not found upstream"
        wanted = self.filters.files(page.files)
        missing = [f for f in wanted if f.filename not in existing]
        if self.dry_run:
            return f"would add {len(missing)} files"
        stored: dict[str, records.StoredFile] = {}
        failed = False
        try:
            # Store, then commit: the batch makes every object durable before it ends.
            with self.store.batch():
                for f in missing:
                    try:
                        stored[f.filename] = fetch_and_store(
                            self.client,
                            self.store,
                            f,
                            normalized,
                            self.tmp_dir,
                            max_size=self.settings.max_file_size,
                        )
                    except HashMismatch as exc:
                        self._fail(f"hash mismatch: {exc}")
                        failed = True
                    except (UpstreamError, storage.StorageError) as exc:
                        self._fail(f"{f.filename}: {exc}")
                        failed = True
        except BaseException:
            self._delete_unreferenced([s.path for s in stored.values()])
            raise
        try:
            with self.db.transaction(write=True) as tx:
                changes = records.apply_page(tx, normalized, records.MIRROR, wanted, stored, by=BY)
                if not failed:
                    tx.execute(
                        "UPDATE projects SET upstream_serial = ? WHERE normalized_name = ?",
                        (serial or page.serial, normalized),
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
