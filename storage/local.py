"""Files on a local disk (the embedded default)."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from typing import BinaryIO

from storage.base import (
    InvalidPath,
    NotFound,
    ObjectInfo,
    Storage,
    StorageMisconfigured,
    StorageUnavailable,
    Temporary,
    check_path,
)

_META_SUFFIX = ".cloudpypi-meta"


class LocalStorage(Storage):
    """Objects as files below ``root``; writes go to a temporary file, fsync, rename.

    Content type and metadata are kept in a small side file so that ``stat``
    answers the same as the object stores do.
    """

    name = "local"

    def __init__(self, *, root: str, base_url: str | None = None) -> None:
        self.root = os.path.abspath(root)
        self.base_url = base_url.rstrip("/") + "/" if base_url else None

    @classmethod
    def from_config(cls, settings: Mapping[str, str], *, data_dir: str) -> LocalStorage:
        path = settings.get("path") or "packages"
        return cls(
            root=os.path.join(data_dir, path),
            base_url=settings.get("public_url") or None,
        )

    def _full(self, path: str) -> str:
        return os.path.join(self.root, *check_path(path).split("/"))

    def check(self) -> None:
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise StorageMisconfigured(
                f"[storage] path: cannot create {self.root}: {exc.strerror}", key="path"
            ) from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageMisconfigured(f"[storage] path: {self.root} is not writable", key="path")

    def put(
        self,
        path: str,
        local_file: BinaryIO,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        full = self._full(path)
        folder = os.path.dirname(full)
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(local_file, out, 1024 * 1024)
                    out.flush()
                    os.fsync(out.fileno())
                self._write_meta(full, content_type, metadata or {})
                os.replace(tmp, full)
            except BaseException:
                _unlink(tmp)
                raise
            _fsync_dir(folder)
        except OSError as exc:
            raise StorageUnavailable(f"cannot write {path}: {exc.strerror or exc}") from None

    def put_file(
        self,
        path: str,
        local_path: str,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Hard-link the file into place when it is on the same disk (no copy); else copy."""
        full = self._full(path)
        folder = os.path.dirname(full)
        tmp = os.path.join(folder, f".tmp-link-{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}")
        try:
            os.makedirs(folder, exist_ok=True)
            os.link(local_path, tmp)
        except OSError:
            with open(local_path, "rb") as f:
                self.put(path, f, content_type=content_type, metadata=metadata)
            return
        try:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._write_meta(full, content_type, metadata or {})
            os.replace(tmp, full)
            _fsync_dir(folder)
        except OSError as exc:
            _unlink(tmp)
            raise StorageUnavailable(f"cannot write {path}: {exc.strerror or exc}") from None

    def _write_meta(self, full: str, content_type: str, metadata: Mapping[str, str]) -> None:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(full), prefix=".tmp-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump({"content_type": content_type, "metadata": dict(metadata)}, out)
            os.replace(tmp, full + _META_SUFFIX)
        except BaseException:
            _unlink(tmp)
            raise

    def _read_meta(self, full: str) -> dict:
        try:
            with open(full + _META_SUFFIX, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def open(self, path: str) -> BinaryIO:
        try:
            return open(self._full(path), "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(path) from None
        except OSError as exc:
            raise StorageUnavailable(f"cannot read {path}: {exc.strerror}") from None

    def stat(self, path: str) -> ObjectInfo:
        full = self._full(path)
        try:
            st = os.stat(full)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(path) from None
        except OSError as exc:
            raise StorageUnavailable(f"cannot stat {path}: {exc.strerror}") from None
        if not os.path.isfile(full):
            raise NotFound(path)
        return self._info(path, full, st)

    def _info(self, path: str, full: str, st: os.stat_result) -> ObjectInfo:
        return ObjectInfo(
            path=path,
            size=st.st_size,
            etag=f"{st.st_size:x}-{st.st_mtime_ns:x}",
            last_modified=datetime.datetime.fromtimestamp(int(st.st_mtime), datetime.timezone.utc),
            content_type=self._read_meta(full).get("content_type"),
        )

    def metadata(self, path: str) -> dict[str, str]:
        """The metadata stored with the object (empty if none)."""
        return self._read_meta(self._full(path)).get("metadata", {})

    def delete(self, path: str) -> None:
        full = self._full(path)
        try:
            os.unlink(full)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageUnavailable(f"cannot delete {path}: {exc.strerror}") from None
        _unlink(full + _META_SUFFIX)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for folder, dirs, files in os.walk(self.root):
            dirs.sort()
            for name in sorted(files):
                if name.startswith(".tmp-") or name.endswith(_META_SUFFIX):
                    continue
                full = os.path.join(folder, name)
                rel = os.path.relpath(full, self.root).replace(os.sep, "/")
                if not rel.startswith(prefix):
                    continue
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                yield self._info(rel, full, st)

    def public_url(self, path: str) -> str | None:
        return self.base_url + check_path(path) if self.base_url else None

    def stale_temporaries(self, older_than: float) -> Iterator[Temporary]:
        """The ``.tmp-*`` files (``put``'s copies, ``put_file``'s ``.tmp-link-*``) a killed writer left."""
        cutoff = time.time() - older_than
        for folder, dirs, files in os.walk(self.root):
            dirs.sort()
            for name in sorted(files):
                if not name.startswith(".tmp-"):
                    continue
                full = os.path.join(folder, name)
                try:
                    st = os.lstat(full)
                except FileNotFoundError:
                    continue
                if st.st_mtime < cutoff:
                    yield Temporary(
                        name=os.path.relpath(full, self.root).replace(os.sep, "/"),
                        size=st.st_size,
                        started=datetime.datetime.fromtimestamp(int(st.st_mtime), datetime.timezone.utc),
                        ref=full,
                    )

    def remove_temporary(self, temporary: Temporary) -> None:
        full = os.path.abspath(str(temporary.ref))
        if not full.startswith(self.root + os.sep) or not os.path.basename(full).startswith(".tmp-"):
            raise InvalidPath(f"not a temporary file of this store: {temporary.name!r}")
        try:
            _unlink(full)
        except OSError as exc:
            raise StorageUnavailable(f"cannot remove {temporary.name}: {exc.strerror}") from None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
