"""The storage contract: what every backend does, and the errors it may raise.

A backend stores opaque objects under ``/``-separated string paths. It knows
nothing of packages, HTTP or the database: the caller chooses the paths (they
are content-addressed, so an object at a path never changes) and turns results
into responses. Library exceptions (boto3, swiftclient, OSError) never leave a
backend; it raises the errors defined here instead.
"""

from __future__ import annotations

import abc
import contextlib
import datetime
import io
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from cloudpypi_base.settings import Section


class StorageError(Exception):
    """Base of every error a backend raises."""


class NotFound(StorageError, FileNotFoundError):
    """No object at that path."""


class StorageUnavailable(StorageError):
    """The store could not be reached or refused the request; retrying later may work."""


class StorageMisconfigured(StorageError):
    """A setting is wrong (unknown bucket, bad credentials, missing key).

    ``key`` names the setting at fault so that the operator knows what to fix.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def settings_section(settings: Mapping[str, str], data_dir: str) -> Section:
    """``[storage]`` with the shared typed getters; errors are StorageMisconfigured(key=...)."""
    return Section(
        settings,
        name="storage",
        base_dir=data_dir,
        error=lambda message, key: StorageMisconfigured(message, key=key),
    )


class InvalidPath(StorageError, ValueError):
    """The path is empty, absolute, or climbs out of the store (``..``)."""


class RangeNotSatisfiable(StorageError, ValueError):
    """The byte range asked of ``open`` starts at or beyond the end of the object."""


@dataclass(frozen=True)
class ObjectHeaders:
    """What ``put`` stores with an object besides its bytes (the caller decides all three)."""

    content_type: str = "application/octet-stream"
    #: A small mapping of ASCII strings kept with the object.
    metadata: Mapping[str, str] = field(default_factory=dict)
    #: The Cache-Control a store that serves HTTP itself (S3, Swift) answers with; None: none.
    cache_control: str | None = None


@dataclass(frozen=True)
class ObjectInfo:
    """What a backend knows of one stored object."""

    path: str
    size: int
    #: An opaque validator that changes when the content changes (an MD5 hex
    #: digest where the store offers one, else a size/time fingerprint).
    etag: str | None = None
    last_modified: datetime.datetime | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class Temporary:
    """A leftover of a write that never finished (its process was killed): a temporary file,
    an incomplete S3 multipart upload, Swift segments no manifest uses."""

    #: What it is, for people: a path in the store, with the upload id where there is one.
    name: str
    #: Bytes it holds, where known.
    size: int | None
    #: When the write started (or last wrote), where known.
    started: datetime.datetime | None
    #: Whatever the backend needs to remove it (opaque to callers).
    ref: Any = None


def check_path(path: str) -> str:
    """Return ``path`` if it is a safe relative object path; raise InvalidPath otherwise."""
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        raise InvalidPath(f"invalid object path: {path!r}")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise InvalidPath(f"invalid object path: {path!r}")
    return path


def check_range(start: int, stop: int | None) -> None:
    """Raise ValueError unless ``(start, stop)`` is a range ``open`` accepts (see there)."""
    if stop is not None and (start < 0 or stop <= start):
        raise ValueError(f"invalid byte range: start={start}, stop={stop}")


def range_header(start: int, stop: int | None) -> str:
    """The HTTP ``Range`` value for ``open``'s ``(start, stop)`` (RFC 9110 14.1.2)."""
    if start < 0:
        return f"bytes={start}"  # a suffix: the last -start bytes
    return f"bytes={start}-" + ("" if stop is None else str(stop - 1))


def parse_content_range(value: str | None) -> tuple[int, int, int] | None:
    """``bytes 100-199/5000`` -> ``(100, 200, 5000)`` (stop exclusive); None if absent or odd."""
    if not value or not value.startswith("bytes "):
        return None
    span, _, total = value[len("bytes ") :].partition("/")
    first, _, last = span.partition("-")
    try:
        return int(first), int(last) + 1, int(total)
    except ValueError:
        return None


def resolve_range(start: int, stop: int | None, size: int) -> tuple[int, int]:
    """The absolute ``[start, stop)`` of ``open``'s range in an object of ``size`` bytes.

    Raises RangeNotSatisfiable when no byte of the object is in the range.
    """
    if start < 0:
        start = max(0, size + start)
    elif start >= size:
        raise RangeNotSatisfiable(f"range starts at {start}, the object has {size} bytes")
    stop = size if stop is None else min(stop, size)
    if stop <= start:
        raise RangeNotSatisfiable(f"empty range of an object of {size} bytes")
    return start, stop


class Storage(abc.ABC):
    """A place to keep package files.

    Implementations take plain values and ready-made clients in their
    constructor; ``from_config`` alone knows the names of the settings.

    The public methods check every path once, here, and then call the
    protected ones (``_put``, ``_open``, ...) that a backend implements: a
    backend receives only safe relative paths and cannot forget to check.
    """

    #: The short name used in ``[storage] backend``.
    name: str = ""

    @classmethod
    @abc.abstractmethod
    def from_config(cls, settings: Mapping[str, str], *, data_dir: str) -> Storage:
        """Build the backend from the ``[storage]`` section (all values are strings).

        ``data_dir`` is the folder relative paths in settings are resolved against.
        Raises StorageMisconfigured naming the key for a missing or invalid value.
        """

    # -- the public interface: paths checked once, then the backend's own method --------

    def put(
        self,
        path: str,
        local_file: BinaryIO,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
        cache_control: str | None = None,
    ) -> None:
        """Store the content of ``local_file`` (read from its current position to EOF) at ``path``.

        Atomic: afterwards the whole object is at ``path``, or, if an error is
        raised, whatever was there before still is (a reader never sees part of
        an object). Storing at a path that already holds an object replaces it.
        ``metadata`` is a small mapping of ASCII strings kept with the object;
        ``cache_control`` (if given) is the Cache-Control header a store that
        serves HTTP itself (S3, Swift) answers with. The caller decides it.
        """
        self._put(
            check_path(path), local_file, ObjectHeaders(content_type, dict(metadata or {}), cache_control)
        )

    def put_file(
        self,
        path: str,
        local_path: str,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
        cache_control: str | None = None,
    ) -> None:
        """Store the file at ``local_path`` (on this machine) at ``path``; same promises as ``put``.

        The caller leaves ``local_path`` untouched until this returns and may
        delete it afterwards.
        """
        headers = ObjectHeaders(content_type, dict(metadata or {}), cache_control)
        self._put_file(check_path(path), local_path, headers)

    def move_file(
        self,
        path: str,
        local_path: str,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
        cache_control: str | None = None,
    ) -> None:
        """``put_file``, and the store takes the file: when this returns, ``local_path`` is
        gone (a store on its filesystem renames it into place: no copy, no new file). After
        an error it may still be there, and the caller removes it.
        """
        headers = ObjectHeaders(content_type, dict(metadata or {}), cache_control)
        self._move_file(check_path(path), local_path, headers)

    def begin_upload(
        self,
        path: str | None = None,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
        cache_control: str | None = None,
        local_copy: str | None = None,
        size_hint: int | None = None,
    ) -> Upload:
        """Start writing an object whose bytes arrive bit by bit: ``write`` them, then ``complete``.

        ``path`` is where the object is expected to end (None: not known yet)
        and the headers are those it is expected to get; a backend that
        streams may send parts to the store while they arrive, but nothing is
        at any path until ``complete`` returns, and ``abort`` leaves nothing
        but what ``stale_temporaries`` lists if the abort itself fails.
        ``local_copy`` names a file on this machine into which the caller
        writes the very same bytes, each piece (flushed) before it is passed to
        ``write``, and keeps until ``complete`` or ``abort`` returns: a backend that
        does not stream stores that file at completion (``put_file``), and one
        that does may read what it sends from it instead of keeping the bytes.
        ``size_hint`` is the expected size, if known (a backend may size its parts by it).
        """
        headers = ObjectHeaders(content_type, dict(metadata or {}), cache_control)
        return self._begin_upload(
            None if path is None else check_path(path), headers, local_copy=local_copy, size_hint=size_hint
        )

    def open(self, path: str, *, start: int = 0, stop: int | None = None) -> BinaryIO:
        """A readable, streaming file over the object (or the bytes ``[start, stop)`` of it).

        One request to the store. The file's ``info`` attribute is the
        object's ObjectInfo (``size`` is the whole object's), and its
        ``range`` is the absolute ``(start, stop)`` it reads, or None for the
        whole object. A negative ``start`` with no ``stop`` reads the last
        ``-start`` bytes (Python's slice, HTTP's suffix range); a ``stop``
        beyond the end is cut to the end. The caller closes the file.
        Raises NotFound if there is no object at ``path``, and
        RangeNotSatisfiable if the range holds no byte of it.
        """
        check_range(start, stop)
        return self._open(check_path(path), start, stop)

    def stat(self, path: str) -> ObjectInfo:
        """Return what is known of the object; raise NotFound if there is none."""
        return self._stat(check_path(path))

    def exists(self, path: str) -> bool:
        """Whether an object is at ``path``."""
        try:
            self.stat(path)
        except NotFound:
            return False
        return True

    def metadata(self, path: str) -> dict[str, str]:
        """The metadata stored with the object; NotFound if there is none.

        Object stores may change the keys' case (S3 lower-cases them, Swift
        also turns ``_`` into ``-``).
        """
        return self._metadata(check_path(path))

    def delete(self, path: str) -> None:
        """Remove the object. Deleting a missing object is not an error."""
        self._delete(check_path(path))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every object whose path starts with ``prefix``, in no promised order."""
        if "\x00" in prefix or prefix.startswith("/") or ".." in prefix.split("/"):
            raise InvalidPath(f"invalid prefix: {prefix!r}")
        return self._list(prefix)

    def public_url(self, path: str) -> str | None:
        """A URL a client can fetch the object from directly, or None if there is none."""
        return self._public_url(check_path(path))

    def signed_url(self, path: str, expires_in: int) -> str | None:
        """A URL that lets anyone holding it read the object for ``expires_in`` seconds, or
        None if the store cannot make one (the caller then streams the object itself)."""
        return self._signed_url(check_path(path), expires_in)

    def _signed_url(self, path: str, expires_in: int) -> str | None:
        """A backend's signed URL for a checked path; the default: none."""
        return None

    def check(self) -> None:
        """Verify that the store is reachable and the settings work (used at startup).

        Raises StorageMisconfigured or StorageUnavailable with a message naming the setting.
        The default does nothing: a backend with nothing to check need not override it.
        """
        return None

    def stale_temporaries(self, older_than: float) -> Iterator[Temporary]:
        """Leftovers of writes started more than ``older_than`` seconds ago that never finished.

        A write in flight is never listed as long as ``older_than`` exceeds the
        longest write. The default lists nothing: a backend whose writes leave
        nothing behind need not override it (nor ``remove_temporary``).
        """
        return iter(())

    def remove_temporary(self, temporary: Temporary) -> None:
        """Remove one leftover from ``stale_temporaries`` (abort the multipart upload, ...).

        Removing one that is already gone is not an error.
        """
        return None

    def close(self) -> None:
        """Release connections and threads held by the backend (default: nothing to release)."""
        return None

    # -- batched durability -----------------------------------------------------------

    def batch(self, *, sync: bool = True) -> AbstractContextManager[None]:
        """A block in which this thread's puts may return before their objects are durable.

        Every put stays atomic (a reader sees the whole object or nothing), and
        when the block ends without an error every object this thread put in it
        is durable before ``batch`` returns: the caller commits rows that refer
        to them only after the block ("store, then commit"). After an error in
        the block nothing is promised for its objects (a crash may lose them;
        no row refers to them). Blocks nest: the outer one makes them durable.
        With ``sync=False`` the end of the block does not: the caller passes the
        objects' paths to ``sync`` (in this or another process, on a store of
        the same settings) before it commits rows that refer to them; several
        blocks' objects are then made durable at once.
        The default is a block that changes nothing: the backend's puts are
        durable when they return (S3, Swift).
        """
        return contextlib.nullcontext()

    def sync(self, paths: Iterable[str]) -> None:
        """Make the objects at ``paths`` durable, put in ``batch(sync=False)`` blocks of this
        or another process; raises StorageUnavailable when the store reports a write error
        (then nothing is promised for them). The default does nothing: puts are durable when
        they return."""
        self._sync([check_path(p) for p in paths])

    def _sync(self, paths: list[str]) -> None:
        """A backend's ``sync`` of checked paths (default: nothing to do)."""
        return None

    # -- what a backend implements (paths already checked) -------------------------------

    @abc.abstractmethod
    def _put(self, path: str, local_file: BinaryIO, headers: ObjectHeaders) -> None:
        """Store ``local_file`` at ``path``, atomically (see ``put``)."""

    def _put_file(self, path: str, local_path: str, headers: ObjectHeaders) -> None:
        """Store the file at ``local_path``; override to avoid a copy (a hard link, a
        multipart upload read from the path). The default opens it and calls ``_put``."""
        with open(local_path, "rb") as f:
            self._put(path, f, headers)

    def _move_file(self, path: str, local_path: str, headers: ObjectHeaders) -> None:
        """Store the file at ``local_path`` and remove it; override to rename it into place.
        The default is ``_put_file``, then the file's removal."""
        self._put_file(path, local_path, headers)
        os.unlink(local_path)

    def _begin_upload(
        self, path: str | None, headers: ObjectHeaders, *, local_copy: str | None, size_hint: int | None
    ) -> Upload:
        """A backend's streaming writer; the default keeps the bytes on local disk (or relies on
        ``local_copy``) and calls ``_put_file`` at completion, so every backend has one."""
        return SpooledUpload(self, local_copy)

    @abc.abstractmethod
    def _open(self, path: str, start: int, stop: int | None) -> BinaryIO:
        """One read of the object or of its range; the file carries ``info`` and ``range``
        (``set_read_info`` sets them). ``(0, None)`` is the whole object."""

    @abc.abstractmethod
    def _stat(self, path: str) -> ObjectInfo:
        """What is known of the object; NotFound if there is none."""

    def _metadata(self, path: str) -> dict[str, str]:
        """The object's metadata (default: none kept; NotFound if there is no object)."""
        self._stat(path)
        return {}

    @abc.abstractmethod
    def _delete(self, path: str) -> None:
        """Remove the object; a missing one is not an error."""

    @abc.abstractmethod
    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose path starts with ``prefix``."""

    def _public_url(self, path: str) -> str | None:
        """A URL for the object (default: none)."""
        return None


class Upload(abc.ABC):
    """An object being written while its bytes arrive (``Storage.begin_upload``).

    Call ``write`` with each piece in order, then exactly one of ``complete`` or
    ``abort``; ``abort`` after ``complete`` (or twice) does nothing, so a caller
    may always abort in a ``finally``. Not thread-safe: one caller writes.
    """

    #: Whether the backend reads what it sends from the caller's ``local_copy``. When it does not
    #: and ``read_back`` works, the caller may keep only the part of the bytes it needs locally.
    reads_local_copy = True

    def __init__(self) -> None:
        self.size = 0
        self._closed = False

    def read_back(self, start: int, stop: int) -> bytes | None:
        """The bytes ``[start, stop)`` of what was written, read from the store, once the last
        ``write`` is done and before ``complete``; None if this backend cannot (the default).
        Raises a StorageError if the store fails."""
        return None

    def write(self, data: bytes) -> None:
        """Add ``data`` to the object. Never raises a store error: a failure of the store is
        kept and raised by ``complete`` (the caller goes on receiving; nothing is lost)."""
        if self._closed:
            raise ValueError("write to an upload that is completed or aborted")
        if data:
            self.size += len(data)
            self._write(data)

    def complete(
        self,
        path: str,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
        cache_control: str | None = None,
    ) -> None:
        """Make the whole object appear at ``path`` with these headers, atomically (as ``put``).

        ``path`` and the headers may differ from those given to ``begin_upload``
        (the backend then moves or re-sends the object). Raises a StorageError if
        the store failed at any point; the upload is then aborted.
        """
        if self._closed:
            raise ValueError("complete on an upload that is completed or aborted")
        headers = ObjectHeaders(content_type, dict(metadata or {}), cache_control)
        path = check_path(path)
        self._closed = True
        try:
            self._complete(path, headers)
        except BaseException:
            self._abort()
            raise

    def abort(self) -> None:
        """Give the upload up: whatever was sent is removed (a removal that fails leaves what
        ``stale_temporaries`` lists). Never raises a store error."""
        if not self._closed:
            self._closed = True
            self._abort()

    @abc.abstractmethod
    def _write(self, data: bytes) -> None:
        """Take ``data`` (non-empty); keep any store error for ``_complete``."""

    @abc.abstractmethod
    def _complete(self, path: str, headers: ObjectHeaders) -> None:
        """Store the object at the checked ``path``; on an error ``_abort`` follows."""

    @abc.abstractmethod
    def _abort(self) -> None:
        """Remove what was sent, best effort; called once."""


class SpooledUpload(Upload):
    """The default streaming writer: the bytes go to a local temporary file (or only to the
    caller's ``local_copy``) and the backend's ``_put_file`` stores them at completion."""

    def __init__(self, store: Storage, local_copy: str | None = None) -> None:
        super().__init__()
        self._store = store
        self._local_copy = local_copy
        self._spool: Any = None
        self._error: OSError | None = None
        if local_copy is None:
            self._spool = tempfile.NamedTemporaryFile(prefix="cloudpypi-upload-", delete=False)  # noqa: SIM115

    def _write(self, data: bytes) -> None:
        if self._spool is not None and self._error is None:
            try:
                self._spool.write(data)
            except OSError as exc:  # a full disk: raised by complete
                self._error = exc

    def _complete(self, path: str, headers: ObjectHeaders) -> None:
        if self._error is not None:
            raise StorageUnavailable(f"storing {path}: spooling the upload failed: {self._error}")
        if self._spool is None:
            self._store._put_file(path, str(self._local_copy), headers)
            return
        self._spool.close()
        try:
            self._store._put_file(path, self._spool.name, headers)
        finally:
            self._remove_spool()

    def _abort(self) -> None:
        if self._spool is not None:
            with contextlib.suppress(OSError):
                self._spool.close()
            self._remove_spool()

    def _remove_spool(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._spool.name)


def set_read_info(f: Any, info: ObjectInfo, byte_range: tuple[int, int] | None) -> BinaryIO:
    """Attach what ``open`` promises (``info``, ``range``) to the file a backend returns."""
    f.info = info
    f.range = byte_range
    return f


class LimitedReader(io.RawIOBase):
    """Reads at most ``length`` bytes of ``f`` from its current position, then EOF."""

    def __init__(self, f: BinaryIO, length: int) -> None:
        self._f = f
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            return 0
        view = memoryview(buffer).cast("B")[: self._left]
        n = self._f.readinto(view)  # type: ignore[attr-defined]
        self._left -= n or 0
        return n or 0

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


class StreamingReader(io.RawIOBase):
    """A raw, readable file over a library's streaming response body.

    Every read runs inside ``errors()``, the backend's context manager that turns
    library and network exceptions into the errors above; wrap it in
    ``io.BufferedReader`` to hand it to callers.
    """

    def __init__(self, body: Any, errors: Callable[[], AbstractContextManager[None]]) -> None:
        self._body = body
        self._errors = errors

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with self._errors():
            data = self._body.read(len(buffer))
        n = len(data)
        memoryview(buffer).cast("B")[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            # Closing a half-read body may fail on a dead connection; nothing is lost.
            with contextlib.suppress(Exception):
                self._body.close()
        super().close()
