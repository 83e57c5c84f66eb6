"""Download one upstream file, verify it against upstream's sha256, store it and its .metadata.

The same order as an upload: the bytes are spooled to a temporary file and
hashed; only a verified file is put (atomically) at its content-addressed path,
through the configured storage backend, which takes the spool file (a local
store on the same disk renames it into place); the caller commits the row afterwards.
A mismatch raises HashMismatch and stores nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import os
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import Version

import storage
from pypi.index.objects import METADATA_CONTENT_TYPE, METADATA_SUFFIX, content_type_of, object_metadata
from pypi.upload.distfile import InvalidFile, wheel_metadata_parsed
from pypi.upload.pipeline import content_path
from pypi.upstream.client import HashMismatch, UpstreamClient, UpstreamError, UpstreamFile
from pypi.upstream.filters import version_of
from pypi.upstream.records import StoredFile, release_meta_from


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.lower().encode(), b.lower().encode())


def fetch_and_store(
    client: UpstreamClient,
    store: storage.Storage,
    f: UpstreamFile,
    project: str,
    tmp_dir: str,
    *,
    path: str | None = None,
    max_size: int = 0,
    max_undeclared: int = 0,
) -> StoredFile:
    """Fetch ``f``, verify, store at ``path`` (default: by its blake2b-256); the StoredFile.
    A file longer than upstream's declared size (when it declares one), than ``max_size``
    or, when upstream declares no size, than ``max_undeclared`` is not read further."""
    if f.size:
        max_size = min(max_size, f.size) if max_size else f.size
    elif max_undeclared:
        max_size = min(max_size, max_undeclared) if max_size else max_undeclared
    got = client.download(f.url, tmp_dir, max_size=max_size)
    try:
        if not _same(got.sha256, f.sha256):
            raise HashMismatch(
                f"{f.filename}: upstream's sha256 is {f.sha256} "
                f"but its bytes hash to {got.sha256}; not stored"
            )
        if f.blake2_256 and not _same(got.blake2_256, f.blake2_256):
            raise HashMismatch(f"{f.filename}: the blake2b-256 does not match upstream's; not stored")
        version = version_of(f.filename) or "0"
        normalized = canonicalize_name(project)
        meta = object_metadata(normalized, version, f.sha256)
        metadata, raw = _metadata(client, f, got.path, project, version)
        path = path or content_path(got.blake2_256, f.filename)
        with store.batch():  # both objects are durable when it ends (one folder: one fsync fewer)
            # The store takes the download (renamed into place on its disk: no copy, no new file).
            store.move_file(path, got.path, content_type=content_type_of(f.filename), metadata=meta)
            if metadata is not None:
                store.put(
                    path + METADATA_SUFFIX,
                    io.BytesIO(metadata),
                    content_type=METADATA_CONTENT_TYPE,
                    metadata=meta,
                )
        return StoredFile(
            path=path,
            size=got.size,
            md5=got.md5,
            blake2_256=got.blake2_256,
            metadata_sha256=hashlib.sha256(metadata).hexdigest() if metadata is not None else None,
            release_meta=release_meta_from(metadata, raw) if metadata is not None else {},
        )
    finally:
        with contextlib.suppress(FileNotFoundError):  # not taken by the store
            os.unlink(got.path)


def _metadata(
    client: UpstreamClient, f: UpstreamFile, local: str, project: str, version: str
) -> tuple[bytes | None, dict[str, Any] | None]:
    """Upstream's PEP 658 metadata when offered (verified), else the wheel's own METADATA;
    with its parsed fields when parsed here (the wheel's own is parsed once, to check it).

    The wheel's own METADATA is tried first: when its sha256 is the one upstream
    advertises, it is upstream's file, and one request per wheel is saved.
    """
    own, raw = None, None
    if f.filename.endswith(".whl"):
        try:
            own, raw = wheel_metadata_parsed(local, f.filename, project, Version(version))
        except (InvalidFile, ValueError):
            own, raw = None, None
    if own is not None and (
        not f.metadata_sha256 or _same(hashlib.sha256(own).hexdigest(), f.metadata_sha256)
    ):
        return own, dict(raw)
    if f.metadata_sha256:
        try:
            data = client.fetch_bytes(f.url + METADATA_SUFFIX)
        except UpstreamError:
            data = None
        if data is not None:
            if not _same(hashlib.sha256(data).hexdigest(), f.metadata_sha256):
                raise HashMismatch(f"{f.filename}.metadata: does not match upstream's sha256; not stored")
            return data, None
    return own, (dict(raw) if raw is not None else None)
