"""The upload pipeline: validate -> (spooled and hashed by pypi.upload.spool) -> store -> commit.

The file reaches the store while the body arrives: ``begin_stream`` opens the
store's streaming writer (``Storage.begin_upload``) when the file part starts,
at the content-addressed path if the form named the BLAKE2b-256 digest before
the file (twine, uv, poetry do), and the spool feeds it the same chunks. Only
once every check passed does ``_store`` complete it at the path; any refusal
aborts it (``Form.close``), so nothing appears at the path of a refused file.

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
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

import storage
from pypi.index import auth, changes, journal, packages, tokens
from pypi.index.auth import User
from pypi.index.db import Database, DatabaseError, IntegrityError, Tx, utcnow
from pypi.index.objects import (
    METADATA_CONTENT_TYPE,
    METADATA_SUFFIX,
    content_path,
    content_type_of,
    object_metadata,
)
from pypi.upload.distfile import (
    EXTENSIONS,
    InvalidFile,
    check_filename,
    check_name_and_version,
    check_sdist,
    wheel_metadata,
)
from pypi.upload.metadata import InvalidMetadataError, ReleaseMetadata, from_form
from pypi.upload.spool import Form, ReadBackError, SpooledFile

log = logging.getLogger(__name__)

FILE_REUSE = "See https://pypi.org/help/#file-name-reuse for more information."
_BLAKE2_256 = re.compile(r"[0-9a-f]{64}")


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
    #: Seconds spent in each step (``checks``, ``store``, ``commit``), for the upload's log line.
    timings: dict[str, float] = field(default_factory=dict)


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
            # A spool that kept only the wheel's tail reads any other byte back from the store.
            opener = spooled.open if spooled.kept_from else None
            return wheel_metadata(spooled.path, spooled.filename, meta.name, meta.version, opener=opener)
        check_sdist(spooled.path, spooled.filename)
        return None
    except InvalidFile as exc:
        raise UploadError(400, str(exc)) from None
    except (ReadBackError, storage.StorageError) as exc:
        log.error("checking %s: reading the upload back from the store failed: %s", spooled.filename, exc)
        raise UploadError(
            503, f"Storage unavailable, nothing was saved; retry the upload later ({exc})"
        ) from None


def check_permission(tx: Tx, user: User, project_name: str) -> object | None:
    """The project row (None for a new project); 403 if ``user`` may not upload to it."""
    if not tokens.allows(user, "upload", project_name):
        raise UploadError(
            403,
            f"Forbidden: this API token ({tokens.describe(user)}) "
            f"may not upload to project '{project_name}'.",
        )
    project = packages.get_project(tx, project_name)
    if project is not None and auth.role_of(tx, project["id"], user) not in auth.UPLOAD_ROLES:
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
    ``cache_control`` is what the stored objects are told to answer with when
    the store serves them itself (the cache policy's ``FILE`` rule).
    """

    def __init__(
        self,
        db: Database,
        store: storage.Storage,
        *,
        after_commit: Callable[[], None] | None = None,
        cache_control: str | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.after_commit = after_commit
        #: Called with the project name before any upload or register; raises UploadError to
        #: refuse it (the upstream dependency-confusion rule, pypi.upstream.proxy.refuse_upload).
        self.guard: Callable[[str], None] | None = None
        self.cache_control = cache_control

    def begin_stream(
        self, form: Form, filename: str, local_copy: str, size_hint: int | None = None
    ) -> storage.Upload | None:
        """The store's streaming writer for a file part that starts now (``read_form``'s
        ``open_sink``), or None when nothing should be sent before the form is whole.

        ``form`` holds the fields sent before the file: with a BLAKE2b-256 digest
        among them the writer starts at the content-addressed path; without, at
        no path (the backend decides: S3 writes a temporary and copies it, others
        send the local copy at completion). The expected object metadata is
        guessed from the fields; ``_store`` gives the checked one at completion.
        """
        if form.get(":action", "file_upload") != "file_upload":
            return None
        filetype = form.get("filetype") or ("bdist_wheel" if filename.endswith(".whl") else "sdist")
        try:
            check_filename(filename, filetype)
        except InvalidFile:
            return None  # refused later with the message
        blake2 = form.get("blake2_256_digest").strip().lower()
        path = content_path(blake2, filename) if _BLAKE2_256.fullmatch(blake2) else None
        try:
            version = str(Version(form.get("version")))
        except InvalidVersion:
            version = form.get("version")
        expected = object_metadata(
            canonicalize_name(form.get("name")), version, form.get("sha256_digest").strip().lower()
        )
        try:
            return self.store.begin_upload(
                path,
                content_type=content_type_of(filename),
                metadata=expected,
                cache_control=self.cache_control,
                local_copy=local_copy,
                size_hint=size_hint,
            )
        except storage.StorageError as exc:
            log.warning("cannot stream %s to the store, sending it once checked: %s", filename, exc)
            return None

    def upload(self, user: User, form: Form, *, via: str = "") -> UploadResult:
        """:action=file_upload. The form's spool is the caller's to close."""
        started = time.monotonic()
        check_protocol(form)
        meta = metadata_of(form)
        spooled = check_upload_form(form, meta)
        filetype = form.get("filetype")
        path = content_path(spooled.blake2_256, spooled.filename)
        if self.guard is not None:
            self.guard(meta.name)
        with self._read() as tx:
            project = check_permission(tx, user, meta.name)
            if check_existing_file(tx, spooled):
                return UploadResult(spooled.filename, path, False, journal.last_serial(tx))
            if filetype == "sdist" and project is not None:
                release = packages.get_release(tx, project["id"], str(meta.version))
                if release is not None and packages.release_has_sdist(tx, release["id"]):
                    raise UploadError(400, "Only one sdist may be uploaded per release.")
        metadata_bytes = check_contents(spooled, filetype, meta)

        checked = time.monotonic()
        stored = self._store(path, spooled, metadata_bytes, meta, form.stream)
        kept = time.monotonic()
        timings = {"checks": checked - started, "store": kept - checked}
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
        timings["commit"] = time.monotonic() - kept
        self._committed()
        return UploadResult(spooled.filename, path, True, int(change.serial or 0), timings)

    def register(self, user: User, form: Form) -> int:
        """:action=submit: create the project and release, or update the release's metadata."""
        meta = metadata_of(form)
        if self.guard is not None:
            self.guard(meta.name)
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
        self,
        path: str,
        spooled: SpooledFile,
        metadata_bytes: bytes | None,
        meta: ReleaseMetadata,
        stream: object | None = None,
    ) -> list[str]:
        """Put the file (and a wheel's METADATA) into storage; 503 if the store fails.

        ``stream`` is the form's streaming writer (``begin_stream``), completed here
        at ``path``; without one the spooled file is sent now.
        """
        object_meta = object_metadata(canonicalize_name(meta.name), str(meta.version), spooled.sha256)
        stored: list[str] = []
        headers = {
            "content_type": content_type_of(spooled.filename),
            "metadata": object_meta,
            "cache_control": self.cache_control,
        }
        try:
            if isinstance(stream, storage.Upload):
                stream.complete(path, **headers)
            else:
                self.store.put_file(path, spooled.path, **headers)
            stored.append(path)
            if metadata_bytes is not None:
                self.store.put(
                    path + METADATA_SUFFIX,
                    io.BytesIO(metadata_bytes),
                    content_type=METADATA_CONTENT_TYPE,
                    metadata=object_meta,
                    cache_control=self.cache_control,
                )
                stored.append(path + METADATA_SUFFIX)
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
