"""Proxy mode: answer for projects that are not local from upstream, pull files through on first use.

A project page from upstream is imported as ordinary rows (origin ``proxy``),
with file rows whose objects are fetched on first download; the views then
render it like any local project, with links to this index's (or the CDN's)
own file URLs. When upstream was last asked is kept in ``upstream_pages``, so
every worker and process agrees on the TTL. Upstream down: the last good page
is served with a Warning header; a project never seen gets a 502/504 within
``[upstream] timeout``.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from packaging.utils import canonicalize_name
from webob import Response

import storage
from cdn import policy
from pypi.config import UpstreamSettings
from pypi.index import packages
from pypi.index.changes import record as record_change
from pypi.index.db import Database, IntegrityError
from pypi.index.objects import METADATA_CONTENT_TYPE, object_metadata
from pypi.upload.pipeline import UploadError
from pypi.upstream import records
from pypi.upstream.client import (
    HashMismatch,
    UpstreamClient,
    UpstreamError,
    UpstreamFile,
    UpstreamUnavailable,
    valid_name,
)
from pypi.upstream.fetch import fetch_and_store
from pypi.upstream.filters import Filters
from pypi.views.responses import error

log = logging.getLogger(__name__)
BY = "proxy"
#: upstream_pages.status of a page upstream failed to give; asked again after RETRY_AFTER seconds.
FAILED = 599
RETRY_AFTER = 10
#: Names upstream does not have (or failed for) remembered at most; beyond, the oldest are
#: forgotten (a flood of random names does not grow ``upstream_pages`` without bound).
MAX_NEGATIVE = 10_000
#: Names a process remembers asking upstream's JSON API for (``describe``), at most.
MAX_DESCRIBED = 10_000
STALE_WARNING = '110 cloudpypi "Response is stale: upstream unreachable"'


@dataclass(frozen=True)
class Answer:
    """What the proxy adds to a project view: an error to return instead, or a warning header."""

    error: Response | None = None
    warning: str | None = None
    #: The page shows upstream's files: cache it only briefly.
    proxied: bool = False

    def decorate(self, response: Response) -> Response:
        """Add the warning; a page showing upstream's files is cached as briefly as a
        missing project (``[cdn] missing_max_age``): upstream's changes are not purged."""
        if self.warning:
            response.headers["Warning"] = self.warning
        if self.proxied and getattr(response, "cache_kind", None) == policy.INDEX:
            response.cache_kind = policy.MISSING
        return response


NOTHING = Answer()


class UpstreamProxy:
    def __init__(
        self,
        db: Database,
        store: storage.Storage,
        settings: UpstreamSettings,
        *,
        tmp_dir: str,
        client: UpstreamClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from pypi.upstream.sync import client_for

        self.db = db
        self.store = store
        self.settings = settings
        self.filters = Filters.from_settings(settings)
        self.client = client or client_for(settings)
        self.tmp_dir = tmp_dir
        self.clock = clock
        self.allowed = {canonicalize_name(n) for n in settings.allow_shadowing}
        self._locks: dict[str, threading.Lock] = {}
        #: normalized name -> when ``describe`` last asked upstream's JSON API, oldest first;
        #: at most MAX_DESCRIBED names, none older than ``page_ttl`` (bounded memory).
        self._described: dict[str, float] = {}
        self._locks_lock = threading.Lock()
        #: Names remembered as missing by this process since it last pruned them.
        self._negatives = 0

    # -- project pages -------------------------------------------------------
    def before_project(self, name: str) -> Answer:
        """Refresh the project from upstream if its page is older than the TTL. Requests of
        this process for one name wait for the one asking upstream (not one request each)."""
        normalized = canonicalize_name(name)
        if not valid_name(name) or not self.filters.wants_project(normalized):
            return NOTHING  # a name that cannot exist is never asked of upstream
        state = self._known(normalized)
        if isinstance(state, Answer):
            return state
        with self._lock("page:" + normalized):
            state = self._known(normalized)  # another request may have asked meanwhile
            if isinstance(state, Answer):
                return state
            return self._refresh(name, normalized, *state)

    def _known(self, normalized: str):
        """The answer from what is known already, or (origin, page row) to ask upstream."""
        with self.db.reading() as tx:
            origin = records.origin_of(tx, normalized)
            page = tx.one(
                "SELECT status, digest, fetched FROM upstream_pages WHERE normalized_name = ?", (normalized,)
            )
        if origin == records.MIRROR or (origin == records.LOCAL and normalized not in self.allowed):
            return NOTHING  # local wins: dependency confusion
        proxied = origin is not None
        if page is not None:
            age = self.clock() - float(page["fetched"])
            failed = int(page["status"]) == FAILED
            if age < (min(self.settings.page_ttl, RETRY_AFTER) if failed else self.settings.page_ttl):
                if failed:  # upstream failed moments ago: do not make every request wait for it
                    return (
                        Answer(warning=STALE_WARNING, proxied=True)
                        if proxied
                        else self._gateway(normalized, None)
                    )
                return Answer(proxied=proxied)
        return origin, page

    def _refresh(self, name: str, normalized: str, origin: str | None, page) -> Answer:
        """Ask upstream for the project's page and import it."""
        try:
            upstream = self.client.project(normalized)
        except UpstreamError as exc:
            log.warning("proxy: %s: %s", normalized, exc)
            self._remember_failure(normalized)
            if origin is not None:
                return Answer(warning=STALE_WARNING, proxied=True)
            return self._gateway(name, exc)
        if upstream is None:
            with self.db.transaction(write=True) as tx:
                orphaned = records.remove_project(tx, normalized, by=BY) if origin == records.PROXY else []
                self._remember(tx, normalized, 404, "")
                self._count_negative(tx)
            self._delete(orphaned)
            return NOTHING
        for reason in upstream.refused:
            log.warning("proxy: %s: not taken: %s", normalized, reason)
        wanted = self.filters.files(upstream.files)
        digest = records.page_digest(wanted)
        orphaned = []
        changed = page is None or page["digest"] != digest or origin is None
        try:
            with self.db.transaction(write=True) as tx:
                if changed:
                    orphaned = records.apply_page(tx, normalized, records.PROXY, wanted, {}, by=BY).orphaned
                self._remember(tx, normalized, 200, digest)
        except IntegrityError:
            pass  # another worker imported the same page at the same moment
        self._delete(orphaned)
        return Answer(proxied=True)

    def describe(self, name: str) -> None:
        """For the JSON API: a proxied project whose newest release has no metadata yet gets it
        from upstream's JSON API (when upstream has one). Not on the simple pages' path, so
        installers never wait for it; asked again at most once per ``page_ttl`` per process."""
        normalized = canonicalize_name(name)
        with self.db.reading() as tx:
            if records.origin_of(tx, normalized) != records.PROXY:
                return
            project = packages.get_project(tx, normalized)
            newest = records.newest_release(tx, project["id"]) if project else None
        if newest is None or not records.lacks_metadata(newest) or self.client.json_url is None:
            return
        now = self.clock()
        with self._locks_lock:
            if not note_asked(self._described, normalized, now, self.settings.page_ttl):
                return
        data = self.client.project_json(normalized)
        if data is None:
            return
        info = data["info"]
        with self.db.transaction(write=True) as tx:
            project = packages.get_project(tx, normalized)
            version = info.get("version")
            release = packages.get_release(tx, project["id"], str(version)) if project and version else None
            if release is not None and records.fill_release(
                tx, release, records.release_meta_from_json(info)
            ):
                record_change(tx, project["name"], release["version"], "update metadata from upstream", BY)

    @staticmethod
    def _gateway(name: str, exc: UpstreamError | None) -> Answer:
        status = 504 if exc is not None and "timed out" in str(exc) else 502
        kind = "failing" if exc is not None and not isinstance(exc, UpstreamUnavailable) else "unreachable"
        return Answer(error=error(status, f"Bad Gateway: upstream is {kind} and {name!r} is not cached here"))

    def _remember_failure(self, normalized: str) -> None:
        """Upstream failed: for RETRY_AFTER seconds every worker answers without asking it again."""
        try:
            with self.db.transaction(write=True) as tx:
                now = self.clock()
                updated = tx.execute(
                    "UPDATE upstream_pages SET status = ?, fetched = ? WHERE normalized_name = ?",
                    (FAILED, now, normalized),
                ).rowcount
                if not updated:
                    tx.execute(
                        "INSERT INTO upstream_pages (normalized_name, status, digest, fetched) "
                        "VALUES (?, ?, '', ?)",
                        (normalized, FAILED, now),
                    )
                    self._count_negative(tx)
        except IntegrityError:
            pass

    def _count_negative(self, tx) -> None:
        """A name was remembered as missing: now and then, forget the oldest beyond MAX_NEGATIVE
        and every one older than the TTL (names without a project: nothing else refers to them)."""
        with self._locks_lock:
            self._negatives += 1
            if self._negatives < max(1, MAX_NEGATIVE // 4):
                return
            self._negatives = 0
        negative = (
            "status IN (404, ?) AND NOT EXISTS "
            "(SELECT 1 FROM projects p WHERE p.normalized_name = upstream_pages.normalized_name)"
        )
        cutoff = tx.scalar(
            f"SELECT fetched FROM upstream_pages WHERE {negative} ORDER BY fetched DESC LIMIT 1 OFFSET ?",
            (FAILED, MAX_NEGATIVE),
        )
        expired = self.clock() - max(self.settings.page_ttl, RETRY_AFTER)
        tx.execute(
            f"DELETE FROM upstream_pages WHERE {negative} AND (fetched < ? OR fetched <= ?)",
            (FAILED, expired, cutoff if cutoff is not None else -1.0),
        )

    def _remember(self, tx, normalized: str, status: int, digest: str) -> None:
        now = self.clock()
        if (
            tx.execute(
                "UPDATE upstream_pages SET status = ?, digest = ?, fetched = ?, last_good = ? "
                "WHERE normalized_name = ?",
                (status, digest, now, now, normalized),
            ).rowcount
            == 0
        ):
            tx.execute(
                "INSERT INTO upstream_pages (normalized_name, status, digest, fetched, last_good) "
                "VALUES (?, ?, ?, ?, ?)",
                (normalized, status, digest, now, now),
            )

    # -- uploads ------------------------------------------------------------
    def check_upload(self, name: str) -> None:
        """Refuse an upload to a name taken from upstream (UploadError 403), unless allowed."""
        refuse_upload(self.db, name, self.allowed, self.settings.url, proxy=self)

    # -- files ----------------------------------------------------------------
    def fetch_file(self, path: str, *, check_store: bool = True) -> Response | None:
        """Pull a proxied file (or its .metadata) into storage; None when done or not ours,
        else the error response (502, 504). A file the store lacks is pulled again, unless
        ``check_store`` is False: then a file once pulled is trusted to be there (no request
        to the store; for a redirect to it)."""
        file_path = path[: -len(".metadata")] if path.endswith(".metadata") else path
        with self.db.reading() as tx:
            row = tx.one(
                "SELECT f.id, f.filename, f.path, f.size, f.sha256_digest, f.blake2_256_digest, "
                "f.metadata_sha256, f.upstream_url, f.upstream_metadata_url, f.stored, r.version, "
                "p.name, p.normalized_name FROM files f JOIN releases r ON r.id = f.release_id "
                "JOIN projects p ON p.id = r.project_id WHERE f.path = ?",
                (file_path,),
            )
        if row is None or row["upstream_url"] is None or (row["stored"] and not check_store):
            return None  # not a proxied file, or pulled already (with its .metadata)
        with self._lock(file_path):
            try:
                if self.store.exists(path):
                    return None
                if path.endswith(".metadata"):
                    if row["stored"] or not row["upstream_metadata_url"]:
                        return None  # no METADATA to fetch: a plain 404
                    return self._pull_metadata(row, path)
                return self._pull(row, path)
            except HashMismatch as exc:
                log.error("proxy: %s", exc)
                return error(
                    502, f"Bad Gateway: upstream's bytes for {row['filename']} do not match its sha256"
                )
            except UpstreamUnavailable as exc:
                log.warning("proxy: %s", exc)
                return error(
                    504 if "timed out" in str(exc) else 502,
                    f"Bad Gateway: upstream is unreachable and {row['filename']} is not stored here",
                )
            except UpstreamError as exc:
                log.warning("proxy: %s", exc)
                return error(502, f"Bad Gateway: upstream failed for {row['filename']}")

    def _pull_metadata(self, row, path: str) -> None:
        """pip asks for a wheel's PEP 658 metadata first: fetch only that, verified."""
        data = self.client.fetch_bytes(row["upstream_metadata_url"])
        if not hmac.compare_digest(
            hashlib.sha256(data).hexdigest().encode(), row["metadata_sha256"].encode()
        ):
            raise HashMismatch(f"{row['filename']}.metadata: does not match upstream's sha256; not stored")
        meta = object_metadata(row["normalized_name"], row["version"], row["sha256_digest"])
        self.store.put(path, io.BytesIO(data), content_type=METADATA_CONTENT_TYPE, metadata=meta)
        with self.db.transaction(write=True) as tx:
            self._fill_from_metadata(tx, row, records.release_meta_from(data))

    @staticmethod
    def _fill_from_metadata(tx, row, meta: dict) -> bool:
        """The file's METADATA describes its release: fill one that has no metadata yet."""
        release = tx.one(
            "SELECT r.* FROM releases r JOIN files f ON f.release_id = r.id WHERE f.id = ?", (row["id"],)
        )
        if release is None or not records.fill_release(tx, release, meta):
            return False
        record_change(tx, row["name"], row["version"], "update metadata from upstream", BY)
        return True

    def _pull(self, row, path: str) -> None:
        f = UpstreamFile(
            filename=row["filename"],
            url=row["upstream_url"],
            sha256=row["sha256_digest"],
            blake2_256=row["blake2_256_digest"] if row["stored"] == 0 else "",
            metadata_sha256=row["metadata_sha256"] if row["upstream_metadata_url"] else None,
            size=int(row["size"]) or None,  # upstream's declared size until pulled
        )
        stored = fetch_and_store(
            self.client,
            self.store,
            f,
            row["normalized_name"],
            self.tmp_dir,
            path=row["path"],
            max_size=self.settings.max_file_size,
            max_undeclared=self.settings.max_undeclared_size,
        )
        with self.db.transaction(write=True) as tx:
            changed = int(row["size"]) != stored.size or (
                row["metadata_sha256"] is None and stored.metadata_sha256 is not None
            )
            tx.execute(
                "UPDATE files SET stored = 1, size = ?, md5_digest = ?, blake2_256_digest = ?, "
                "metadata_sha256 = COALESCE(metadata_sha256, ?) WHERE id = ?",
                (stored.size, stored.md5, stored.blake2_256, stored.metadata_sha256, row["id"]),
            )
            described = self._fill_from_metadata(tx, row, stored.release_meta)
            if changed and not described:  # the pages show size and metadata: a new serial renders them anew
                record_change(tx, row["name"], row["version"], f"fetch file {row['filename']}", BY)

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_lock:
            if len(self._locks) > 1024:
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            return self._locks.setdefault(key, threading.Lock())

    def _delete(self, paths: list[str]) -> None:
        for p in paths:
            try:
                self.store.delete(p)
            except storage.StorageError:
                pass


def refuse_upload(
    db: Database, name: str, allowed: set[str], upstream_url: str, *, proxy: UpstreamProxy | None = None
) -> None:
    """The dependency-confusion rule for uploads: a name taken from upstream is refused (403)."""
    normalized = canonicalize_name(name)
    if normalized in allowed:
        return
    with db.reading() as tx:
        origin = records.origin_of(tx, normalized)
    if origin is None and proxy is not None:
        answer = proxy.before_project(normalized)
        if answer.error is not None:
            raise UploadError(
                503, f"Cannot check whether {name!r} exists upstream ({upstream_url}); try again later."
            )
        with db.reading() as tx:
            origin = records.origin_of(tx, normalized)
    if origin in (records.MIRROR, records.PROXY):
        raise UploadError(
            403,
            f"The name {name!r} is taken from the upstream index {upstream_url}; uploads to it are "
            "refused to prevent dependency confusion. An operator can allow it with "
            "[upstream] allow_shadowing.",
        )


def note_asked(asked: dict[str, float], name: str, now: float, ttl: float, cap: int = MAX_DESCRIBED) -> bool:
    """Whether ``name`` may be asked of upstream again (not asked within ``ttl``); if so it is
    noted as asked ``now``. ``asked`` is kept oldest first, with at most ``cap`` names and none
    older than ``ttl``: a flood of names does not grow it without bound."""
    if now - asked.get(name, -1e18) < ttl:
        return False
    asked.pop(name, None)
    asked[name] = now
    while asked and (len(asked) > cap or now - next(iter(asked.values())) >= ttl):
        del asked[next(iter(asked))]
    return True
