"""Every fact about stored objects, in one place: where they live, what they are called,
and the headers each one carries.

Every file row names one object (``files.path``, content-addressed:
``packages/ab/cd/<rest of the blake2b-256>/<filename>``, as pypi.org's); a wheel
whose METADATA was extracted (``metadata_sha256`` set) names a second one at
``path + ".metadata"``. The upload pipeline stores them, ``views/files.py``
serves them, migrate-storage copies exactly these, fsck checks them, and the
public URLs (``cdn.urls.URLBuilder``, given ``PACKAGES_PREFIX``) name them: all
take the names, content types and metadata from here, so that an object
served through the application (``serve = proxy``) and straight from the store
(``serve = redirect``) carries the same Content-Type.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from pypi.index.db import Tx

#: The Content-Type each kind of distribution file is stored and served with. An sdist
#: is gzip data (RFC 6713 ``application/gzip``), never ``application/x-tar`` with a
#: ``Content-Encoding: gzip``, which makes pip and proxies unpack the download.
CONTENT_TYPES = {".whl": "application/zip", ".zip": "application/zip", ".tar.gz": "application/gzip"}
#: The suffix of a wheel's METADATA object (PEP 658), next to the wheel.
METADATA_SUFFIX = ".metadata"
METADATA_CONTENT_TYPE = "text/plain; charset=utf-8"
#: Where every package object lives; nothing else in a store is the index's.
PACKAGES_PREFIX = "packages/"
_NO_METADATA: Mapping[str, str] = MappingProxyType({})


def content_path(blake2_256: str, filename: str) -> str:
    """The content-addressed object path, as pypi.org's: ``packages/ab/cd/ef.../<filename>``."""
    b = blake2_256
    return f"{PACKAGES_PREFIX}{b[:2]}/{b[2:4]}/{b[4:]}/{filename}"


class StoredObject(NamedTuple):
    """One object a file row references.

    A named tuple, not a dataclass: fsck and migrate-storage make one per object, millions
    of them at pypi.org's size, and a tuple is built several times faster.
    """

    path: str
    #: The file the object belongs to (for messages).
    filename: str
    #: The SHA-256 hex digest the content must have.
    sha256: str
    #: The size in bytes, where the database knows it (not for .metadata objects).
    size: int | None
    content_type: str
    #: The object metadata it is stored with; empty when read without it
    #: (``pypi.index.stream.referenced_objects(..., with_metadata=False)``: fsck, dry runs).
    metadata: Mapping[str, str] = _NO_METADATA

    @property
    def is_metadata(self) -> bool:
        return self.path.endswith(METADATA_SUFFIX)


def content_type_of(filename: str) -> str:
    """The Content-Type a distribution file or a ``.metadata`` object is stored and served with."""
    if filename.endswith(".whl"):  # most files: first, as this runs for millions in fsck
        return CONTENT_TYPES[".whl"]
    if filename.endswith(METADATA_SUFFIX):
        return METADATA_CONTENT_TYPE
    for ext, content_type in CONTENT_TYPES.items():
        if filename.endswith(ext):
            return content_type
    return "application/octet-stream"


def object_metadata(normalized_name: str, version: str, sha256: str) -> dict[str, str]:
    """The object metadata the upload pipeline stores with a file and its .metadata."""
    return {"project": normalized_name, "version": version, "sha256": sha256}


def objects_of(row: Any) -> list[StoredObject]:
    """The objects of one file row (needs filename, path, size, sha256_digest,
    metadata_sha256, version and normalized_name)."""
    meta = object_metadata(row["normalized_name"], row["version"], row["sha256_digest"])
    found = [
        StoredObject(
            path=row["path"],
            filename=row["filename"],
            sha256=row["sha256_digest"],
            size=int(row["size"]),
            content_type=content_type_of(row["filename"]),
            metadata=meta,
        )
    ]
    if row["metadata_sha256"]:
        found.append(
            StoredObject(
                path=row["path"] + METADATA_SUFFIX,
                filename=row["filename"],
                sha256=row["metadata_sha256"],
                size=None,
                content_type=METADATA_CONTENT_TYPE,
                metadata=meta,
            )
        )
    return found


def referenced(tx: Tx) -> Iterator[StoredObject]:
    """Every object the database references, file by file in path order."""
    rows = tx.all(
        "SELECT f.filename, f.path, f.size, f.sha256_digest, f.metadata_sha256, "
        "r.version, p.normalized_name FROM files f "
        "JOIN releases r ON r.id = f.release_id JOIN projects p ON p.id = r.project_id "
        "ORDER BY f.path"
    )
    for row in rows:
        yield from objects_of(row)


def file_path_of(object_path: str) -> str:
    """The file path an object belongs to (``X.whl.metadata`` -> ``X.whl``)."""
    if object_path.endswith(METADATA_SUFFIX):
        return object_path[: -len(METADATA_SUFFIX)]
    return object_path
