"""The upload pipeline: validate -> (spooled and hashed by pypi.upload.spool) -> store -> commit.

Ordering makes it safe: the file is stored first, then the database row is
committed; if the commit fails, the stored objects are removed only once a
fresh transaction shows that no row references them (a lost COMMIT
acknowledgement looks like a failure); when the database cannot tell, they
stay. A file row never points to a missing object.
Errors are UploadError with the HTTP status and pypi.org's message; this
module knows nothing else of HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from packaging.utils import canonicalize_name

import storage
from pypi.index import auth, changes, journal, packages
from pypi.index.auth import User
from pypi.index.db import Database, DatabaseError, IntegrityError, Tx, utcnow
from pypi.index.objects import CONTENT_TYPES
from pypi.upload.distfile import (
    EXTENSIONS,
    InvalidFile,
    check_filename,
    check_name_and_version,
    check_sdist,
    wheel_metadata,
)
from pypi.upload.metadata import InvalidMetadataError, ReleaseMetadata, from_form
from pypi.upload.spool import Form, SpooledFile

log = logging.getLogger(__name__)

FILE_REUSE = "See https://pypi.org/help/#file-name-reuse for more information."


class UploadError(Exception):
    """The upload is refused: ``status`` and a message that names the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class UploadResult:
    filename: str
    path: str
    #: False when the identical file was already there (a retried upload).
    created: bool
    serial: int


def content_path(blake2_256: str, filename: str) -> str:
    """The content-addressed object path, as pypi.org's: packages/ab/cd/ef.../<filename>."""
    b = blake2_256
    return f"packages/{b[:2]}/{b[2:4]}/{b[4:]}/{filename}"


def check_protocol(form: Form) -> None:
    if form.get("protocol_version", "1") != "1":
        raise UploadError(400, "Unknown protocol version.")


def metadata_of(form: Form) -> ReleaseMetadata:
    try:
        return from_form(form)
    except InvalidMetadataError as exc:
        raise UploadError(400, str(exc)) from None


def check_upload_form(form: Form, meta: ReleaseMetadata) -> SpooledFile:
    """Filetype, filename, content and digests: everything that needs no database."""
    filetype = form.get("filetype")
    if filetype not in EXTENSIONS:
        if filetype == "bdist_egg":
            raise UploadError(400, "Invalid value for filetype. Error: Uploading eggs is not allowed.")
        raise UploadError(400, "Invalid value for filetype. Error: Use a known file type.")
    spooled = form.file
    if spooled is None or not spooled.filename:
        raise UploadError(400, "Upload payload does not have a file.")
    try:
        check_filename(spooled.filename, filetype)
        check_name_and_version(spooled.filename, filetype, meta.name, meta.version)
    except InvalidFile as exc:
        raise UploadError(400, str(exc)) from None
    if spooled.size == 0:
        raise UploadError(400, "Invalid distribution file. The file is empty.")
    supplied = {
        "md5": form.get("md5_digest").strip().lower(),
        "sha256": form.get("sha256_digest").strip().lower(),
        "blake2_256": form.get("blake2_256_digest").strip().lower(),
    }
    if not any(supplied.values()):
        raise UploadError(400, "Include at least one message digest.")
    if len(supplied["blake2_256"]) == 128:
        # distutils (Python 3.9-3.11) sends blake2b's default 512-bit digest under this
        # name (CPython issue 89753): check it as what it is.
        if not hmac.compare_digest(supplied["blake2_256"].encode(), _blake2b_512(spooled).encode()):
            raise UploadError(
                400,
                "The digest supplied does not match a digest calculated from the uploaded file.",
            )
        supplied["blake2_256"] = ""
    for algo, value in supplied.items():
        # Compared as bytes: compare_digest refuses str with non-ASCII characters (a 500, not a 400).
        if value and not hmac.compare_digest(value.encode(), getattr(spooled, algo).encode()):
            raise UploadError(
                400,
                "The digest supplied does not match a digest calculated from the uploaded file.",
            )
    return spooled


def _blake2b_512(spooled: SpooledFile) -> str:
    digest = hashlib.blake2b()
    with spooled.open() as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_contents(spooled: SpooledFile, filetype: str, meta: ReleaseMetadata) -> bytes | None:
    """Open the archive; return a wheel's METADATA (None for an sdist)."""
    try:
        if filetype == "bdist_wheel":
            return wheel_metadata(spooled.path, spooled.filename, meta.name, meta.version)
        check_sdist(spooled.path, spooled.filename)
        return None
    except InvalidFile as exc:
        raise UploadError(400, str(exc)) from None


def check_permission(tx: Tx, user: User, project_name: str) -> object | None:
    """The project row (None for a new project); 403 if ``user`` may not upload to it."""
    project = packages.get_project(tx, project_name)
    if project is not None and auth.role_of(tx, project["id"], user) is None:
        raise UploadError(
            403, f"The user '{user.username}' isn't allowed to upload to project '{project['name']}'."
        )
    return project


def check_existing_file(tx: Tx, spooled: SpooledFile) -> bool:
    """True if this very file is already stored (a retry); UploadError if the name is taken."""
    existing = packages.file_by_name(tx, spooled.filename)
    if existing is not None:
        if hmac.compare_digest(existing["sha256_digest"], spooled.sha256):
            return True
        raise UploadError(400, f"File already exists. {FILE_REUSE}")
    if packages.filename_was_used(tx, spooled.filename):
        raise UploadError(400, f"This filename has already been used, use a different version. {FILE_REUSE}")
    return False


class Uploader:
    """Runs an upload or a register against one database and one storage backend.

    ``after_commit`` is called after every committed change (it queued CDN
    purges in the outbox): the purge worker's wake-up. It must not block;
    whatever it raises is logged and never fails the upload.
    """

    def __init__(
        self, db: Database, store: storage.Storage, *, after_commit: Callable[[], None] | None = None
    ) -> None:
        self.db = db
        self.store = store
        self.after_commit = after_commit

    def upload(self, user: User, form: Form, *, via: str = "") -> UploadResult:
        """:action=file_upload. The form's spool is the caller's to close."""
        check_protocol(form)
        meta = metadata_of(form)
        spooled = check_upload_form(form, meta)
        filetype = form.get("filetype")
        path = content_path(spooled.blake2_256, spooled.filename)
        with self._read() as tx:
            project = check_permission(tx, user, meta.name)
            if check_existing_file(tx, spooled):
                return UploadResult(spooled.filename, path, False, journal.last_serial(tx))
            if filetype == "sdist" and project is not None:
                release = packages.get_release(tx, project["id"], str(meta.version))
                if release is not None and packages.release_has_sdist(tx, release["id"]):
                    raise UploadError(400, "Only one sdist may be uploaded per release.")
        metadata_bytes = check_contents(spooled, filetype, meta)

        stored = self._store(path, spooled, metadata_bytes, meta)
        try:
            with self.db.transaction(write=True) as tx:
                change = self._commit(tx, user, form, meta, spooled, path, metadata_bytes, via)
        except BaseException as exc:
            # Whether the row committed is known only by asking the database afresh (a lost
            # COMMIT acknowledgement looks like a failed commit): the objects go only once
            # a fresh transaction shows that no row references them.
            referenced = self._unstore(stored, path)
            if referenced and isinstance(exc, Exception) and not isinstance(exc, UploadError):
                # Committed after all, by this upload or an identical concurrent one.
                log.warning("upload of %s committed although the commit reported: %s", path, exc)
                with self._read() as tx:
                    return UploadResult(spooled.filename, path, True, journal.last_serial(tx))
            if isinstance(exc, IntegrityError):
                # A concurrent upload took the filename first (check_existing_file then says so),
                # or another constraint refused the change: never a false "File already exists".
                with self._read() as tx:
                    if check_existing_file(tx, spooled):
                        return UploadResult(spooled.filename, path, False, journal.last_serial(tx))
                log.error("upload of %s refused by a database constraint: %s", path, exc)
                raise UploadError(
                    503,
                    "The upload conflicted with a concurrent change to this project, nothing was "
                    "saved; retry the upload.",
                ) from None
            if isinstance(exc, DatabaseError):
                if referenced is None:
                    raise UploadError(
                        503,
                        f"Database unavailable; whether the upload was saved is unknown, retrying the "
                        f"same file is safe: {exc}",
                    ) from None
                raise UploadError(503, f"Database unavailable, nothing was stored: {exc}") from None
            raise
        self._committed()
        return UploadResult(spooled.filename, path, True, int(change.serial or 0))

    def register(self, user: User, form: Form) -> int:
        """:action=submit: create the project and release, or update the release's metadata."""
        meta = metadata_of(form)
        try:
            with self.db.transaction(write=True) as tx:
                project, release, new_project = self._project_and_release(tx, user, meta)
                if release is not None:
                    packages.update_release(tx, release["id"], meta.fields)
                    action = "update release"
                else:
                    packages.create_release(tx, project["id"], str(meta.version), meta.fields)
                    action = "new release"
                change = changes.record(
                    tx, project["name"], str(meta.version), action, user.username, new_project=new_project
                )
        except IntegrityError:
            raise UploadError(409, "A concurrent change to this project won; try again.") from None
        except DatabaseError as exc:
            raise UploadError(503, f"Database unavailable: {exc}") from None
        self._committed()
        return int(change.serial or 0)

    # -- steps -----------------------------------------------------------
    def _committed(self) -> None:
        if self.after_commit is not None:
            try:
                self.after_commit()
            except Exception:
                log.exception("after_commit hook failed (the change is committed)")

    def _read(self):
        try:
            return self.db.transaction()
        except DatabaseError as exc:
            raise UploadError(503, f"Database unavailable: {exc}") from None

    def _store(
        self, path: str, spooled: SpooledFile, metadata_bytes: bytes | None, meta: ReleaseMetadata
    ) -> list[str]:
        """Put the file (and a wheel's METADATA) into storage; 503 if the store fails."""
        ext = next(e for e in CONTENT_TYPES if spooled.filename.endswith(e))
        object_meta = {
            "project": canonicalize_name(meta.name),
            "version": str(meta.version),
            "sha256": spooled.sha256,
        }
        stored: list[str] = []
        try:
            self.store.put_file(path, spooled.path, content_type=CONTENT_TYPES[ext], metadata=object_meta)
            stored.append(path)
            if metadata_bytes is not None:
                self.store.put(
                    path + ".metadata",
                    io.BytesIO(metadata_bytes),
                    content_type="text/plain; charset=utf-8",
                    metadata=object_meta,
                )
                stored.append(path + ".metadata")
        except storage.StorageError as exc:
            self._unstore(stored, path)
            log.error("storing %s failed: %s", path, exc)
            raise UploadError(
                503, f"Storage unavailable, nothing was saved; retry the upload later ({exc})"
            ) from None
        return stored

    def _unstore(self, stored: Iterable[str], path: str) -> bool | None:
        """Remove objects stored for an upload that may not have committed, unless a row uses them.

        Asks the database in a fresh transaction: True if a row references
        ``path`` (the objects stay), False if none does (they are removed), None
        if the database cannot tell (they stay: an orphan at worst, which
        ``fsck --repair`` removes, never a row without its object).
        """
        try:
            with self.db.transaction() as tx:
                if packages.file_by_path(tx, path) is not None:
                    return True
        except DatabaseError as exc:
            log.warning("cannot tell whether %s committed, keeping its objects: %s", path, exc)
            return None
        for p in stored:
            try:
                self.store.delete(p)
            except storage.StorageError as exc:  # fsck reports what is left behind
                log.warning("could not remove unreferenced %s: %s", p, exc)
        return False

    def _project_and_release(self, tx: Tx, user: User, meta: ReleaseMetadata):
        project = check_permission(tx, user, meta.name)
        new_project = project is None
        if new_project:
            project = packages.create_project(tx, meta.name)
            auth.grant(tx, project["id"], user, "owner")
            changes.record(tx, project["name"], None, "create", user.username, new_project=True)
            changes.record(tx, project["name"], None, f"add Owner {user.username}", user.username)
        release = packages.get_release(tx, project["id"], str(meta.version))
        return project, release, new_project

    def _commit(
        self,
        tx: Tx,
        user: User,
        form: Form,
        meta: ReleaseMetadata,
        spooled: SpooledFile,
        path: str,
        metadata_bytes: bytes | None,
        via: str,
    ) -> changes.Change:
        project, release, new_project = self._project_and_release(tx, user, meta)
        if check_existing_file(tx, spooled):
            raise IntegrityError("file appeared concurrently")
        if release is None:
            release = packages.create_release(tx, project["id"], str(meta.version), meta.fields)
            changes.record(tx, project["name"], str(meta.version), "new release", user.username)
        elif form.get("filetype") == "sdist" and packages.release_has_sdist(tx, release["id"]):
            raise UploadError(400, "Only one sdist may be uploaded per release.")
        packages.add_file(
            tx,
            release["id"],
            {
                "filename": spooled.filename,
                "path": path,
                "size": spooled.size,
                "md5_digest": spooled.md5,
                "sha256_digest": spooled.sha256,
                "blake2_256_digest": spooled.blake2_256,
                "packagetype": form.get("filetype"),
                "python_version": form.get("pyversion")
                or ("source" if form.get("filetype") == "sdist" else ""),
                "requires_python": meta.fields.get("requires_python", ""),
                "comment_text": form.get("comment"),
                "metadata_sha256": hashlib.sha256(metadata_bytes).hexdigest() if metadata_bytes else None,
                "upload_time": utcnow(),
                "uploaded_via": via[:200],
                "uploaded_by": user.id,
            },
        )
        return changes.record(
            tx,
            project["name"],
            str(meta.version),
            f"add {form.get('pyversion') or 'source'} file {spooled.filename}",
            user.username,
            new_project=new_project,
        )
