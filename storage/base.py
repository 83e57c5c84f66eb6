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
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, BinaryIO

#: Headers every stored package file carries, so a CDN that reads the bucket
#: directly serves them right. The path names the content: it never changes.
IMMUTABLE_CACHE_CONTROL = "max-age=365000000, immutable, public"


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


class InvalidPath(StorageError, ValueError):
    """The path is empty, absolute, or climbs out of the store (``..``)."""


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


class Storage(abc.ABC):
    """A place to keep package files.

    Implementations take plain values and ready-made clients in their
    constructor; ``from_config`` alone knows the names of the settings.
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

    @abc.abstractmethod
    def put(
        self,
        path: str,
        local_file: BinaryIO,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Store the content of ``local_file`` (read from its current position to EOF) at ``path``.

        Atomic: afterwards the whole object is at ``path``, or, if an error is
        raised, whatever was there before still is (a reader never sees part of
        an object). Storing at a path that already holds an object replaces it.
        ``metadata`` is a small mapping of ASCII strings kept with the object.
        """

    def put_file(
        self,
        path: str,
        local_path: str,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Store the file at ``local_path`` (on this machine) at ``path``; same promises as ``put``.

        The caller leaves ``local_path`` untouched until this returns and may
        delete it afterwards. Backends may override it to avoid a copy (a hard
        link on the same disk, a parallel multipart upload from the path).
        """
        with open(local_path, "rb") as f:
            self.put(path, f, content_type=content_type, metadata=metadata)

    @abc.abstractmethod
    def open(self, path: str) -> BinaryIO:
        """Return a readable, streaming file object for the object; the caller closes it.

        Raises NotFound if there is no object at ``path``.
        """

    @abc.abstractmethod
    def stat(self, path: str) -> ObjectInfo:
        """Return what is known of the object; raise NotFound if there is none."""

    def exists(self, path: str) -> bool:
        """Whether an object is at ``path``."""
        try:
            self.stat(path)
        except NotFound:
            return False
        return True

    @abc.abstractmethod
    def delete(self, path: str) -> None:
        """Remove the object. Deleting a missing object is not an error."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every object whose path starts with ``prefix``, in no promised order."""

    def public_url(self, path: str) -> str | None:
        """A URL a client can fetch the object from directly, or None if there is none."""
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
