"""Files on a local disk (the embedded default)."""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import errno
import io
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import BinaryIO

from cloudpypi_base.files import create_numbered
from storage.base import (
    InvalidPath,
    LimitedReader,
    NotFound,
    ObjectHeaders,
    ObjectInfo,
    Storage,
    StorageMisconfigured,
    StorageUnavailable,
    Temporary,
    resolve_range,
    set_read_info,
    settings_section,
)

_META_SUFFIX = ".cloudpypi-meta"
#: The extended attribute holding an object's content type and metadata (where the
#: filesystem has them; else the side file ``<object>.cloudpypi-meta``).
_XATTR = "user.cloudpypi"
#: setxattr's answers for a filesystem without user attributes: side files from then on.
_NO_XATTRS = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM})
#: ... and for one value it cannot hold (too large): a side file for that object.
_XATTR_TOO_LARGE = frozenset({errno.E2BIG, errno.ENOSPC, errno.ERANGE})
#: Objects and folders are readable by everyone: ``public_url`` exists so that a
#: web server (running as another user) serves them straight from the folder.
FILE_MODE = 0o644
FOLDER_MODE = 0o755
#: A batch of this many objects or more ends with one syncfs rather than an fsync each.
SYNCFS_FROM = 4


class LocalStorage(Storage):
    """Objects as files below ``root``; writes go to a temporary file, fsync, rename (the
    fsyncs of the puts in a ``batch`` are done together at its end).

    Content type and metadata are kept in an extended attribute of the file
    (``user.cloudpypi``, set before the rename: it appears with the object and
    is durable with it), or where the filesystem has none in a small side file
    ``<object>.cloudpypi-meta`` (durable before the object's rename), so that
    ``stat`` answers the same as the object stores do. Files are created 0644 and
    folders 0755, whatever the umask. ``cache_control`` is not kept: the web
    server in front of ``public_url`` (or the application) sets that header.
    """

    name = "local"

    def __init__(self, *, root: str, base_url: str | None = None) -> None:
        self.root = os.path.abspath(root)
        self.base_url = base_url.rstrip("/") + "/" if base_url else None
        #: Per thread: the objects put in the current ``batch`` (None outside one).
        self._batch = threading.local()
        #: st_dev -> the syncfs shared by the batches ending at the same time.
        self._group_syncs: dict[int, _GroupSync] = {}
        #: False once the filesystem refused a user extended attribute: side files only.
        self._xattrs = True

    @classmethod
    def from_config(cls, settings: Mapping[str, str], *, data_dir: str) -> LocalStorage:
        s = settings_section(settings, data_dir)
        return cls(root=s.path("path", "packages"), base_url=s.url("public_url"))

    def _full(self, path: str) -> str:
        return os.path.join(self.root, *path.split("/"))

    def _makedirs(self, folder: str) -> None:
        """Create ``folder`` and its missing parents, each 0755 whatever the umask. One
        ``mkdir`` when the folder exists or only it is missing (a new object's own folder)."""
        try:
            os.mkdir(folder, FOLDER_MODE)
        except FileExistsError:
            return
        except FileNotFoundError:
            parent = os.path.dirname(folder)
            if parent == folder:
                raise
            self._makedirs(parent)
            try:
                os.mkdir(folder, FOLDER_MODE)
            except FileExistsError:
                return
        os.chmod(folder, FOLDER_MODE)

    def check(self) -> None:
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise StorageMisconfigured(
                f"[storage] path: cannot create {self.root}: {exc.strerror}", key="path"
            ) from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageMisconfigured(f"[storage] path: {self.root} is not writable", key="path")

    def _put(self, path: str, local_file: BinaryIO, headers: ObjectHeaders) -> None:
        full = self._full(path)
        folder = os.path.dirname(full)
        deferred = self._deferred(full)
        try:
            self._makedirs(folder)
            fd, tmp = _create_temporary(folder)
            try:
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(local_file, out, 1024 * 1024)
                    out.flush()
                    os.fchmod(out.fileno(), FILE_MODE)
                    in_xattr = self._set_xattr(out.fileno(), headers)
                    if not deferred:
                        os.fsync(out.fileno())
                self._place(tmp, full, headers, in_xattr, durable=not deferred)
            except BaseException:
                _unlink(tmp)
                raise
            if not deferred:
                _fsync_dir(folder)
        except OSError as exc:
            raise StorageUnavailable(f"cannot write {path}: {exc.strerror or exc}") from None

    def _place(self, tmp: str, full: str, headers: ObjectHeaders, in_xattr: bool, *, durable: bool) -> None:
        """Rename the written ``tmp`` to ``full``: after its side file when the attribute
        could not be set, else dropping the side file an older object there had."""
        if not in_xattr:
            self._write_meta(full, headers.content_type, headers.metadata, durable=durable)
        os.replace(tmp, full)
        if in_xattr:
            _unlink(full + _META_SUFFIX)

    def _set_xattr(self, target: int | str, headers: ObjectHeaders) -> bool:
        """Set the content type and metadata as the file's extended attribute (``target``:
        its descriptor or path); False where the filesystem cannot (then a side file)."""
        if not self._xattrs:
            return False
        try:
            os.setxattr(target, _XATTR, _meta_bytes(headers.content_type, headers.metadata))
        except OSError as exc:
            if exc.errno in _NO_XATTRS:
                self._xattrs = False
                return False
            if exc.errno in _XATTR_TOO_LARGE:
                return False
            raise
        return True

    def _put_file(self, path: str, local_path: str, headers: ObjectHeaders) -> None:
        """Hard-link the file into place when it is on the same disk (no copy); else copy."""
        full = self._full(path)
        folder = os.path.dirname(full)
        tmp = os.path.join(folder, f".tmp-link-{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}")
        try:
            self._makedirs(folder)
            os.link(local_path, tmp)
        except OSError:
            with open(local_path, "rb") as f:
                self._put(path, f, headers)
            return
        try:
            self._finish(tmp, full, headers)
        except OSError as exc:
            _unlink(tmp)
            raise StorageUnavailable(f"cannot write {path}: {exc.strerror or exc}") from None

    def _move_file(self, path: str, local_path: str, headers: ObjectHeaders) -> None:
        """Rename the file into place when it is on the same disk (no copy, no new file);
        else ``put_file`` and remove it. It is the object's temporary meanwhile: it is
        complete when it is renamed, and where it lies a killed writer's leftover is found
        (a spool folder's or a ``.tmp-*`` file)."""
        full = self._full(path)
        try:
            self._makedirs(os.path.dirname(full))
            self._finish(local_path, full, headers)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise StorageUnavailable(f"cannot write {path}: {exc.strerror or exc}") from None
            self._put_file(path, local_path, headers)
            _unlink(local_path)

    def _finish(self, tmp: str, full: str, headers: ObjectHeaders) -> None:
        """Make the complete file ``tmp`` (on this disk) the object at ``full``: mode,
        headers, fsyncs (or the batch's), rename."""
        deferred = self._deferred(full)
        if deferred:  # the batch's end opens it to make it durable
            os.chmod(tmp, FILE_MODE)  # a spool file (or the one it shares an inode with) is 0600
            in_xattr = self._set_xattr(tmp, headers)
        else:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fchmod(fd, FILE_MODE)
                in_xattr = self._set_xattr(fd, headers)
                os.fsync(fd)
            finally:
                os.close(fd)
        self._place(tmp, full, headers, in_xattr, durable=not deferred)
        if not deferred:
            _fsync_dir(os.path.dirname(full))

    # -- batched durability: one flush of the filesystem for the objects of a batch --------

    @contextlib.contextmanager
    def batch(self, *, sync: bool = True) -> Iterator[None]:
        """Puts in the block skip their two fsyncs (file, folder); its end makes them all
        durable at once (see ``_make_durable``), or with ``sync=False`` a later ``sync``
        of their paths does. Nested blocks join the outer one."""
        if getattr(self._batch, "objects", None) is not None:
            yield
            return
        objects: list[str] = []
        self._batch.objects = objects
        try:
            yield
        finally:
            self._batch.objects = None
        if objects and sync:
            self._make_durable(objects)

    def _sync(self, paths: list[str]) -> None:
        """The objects of ``batch(sync=False)`` blocks (this process's or another's): what the
        end of a batch does for its own (one syncfs from SYNCFS_FROM objects on)."""
        if paths:
            self._make_durable([self._full(p) for p in paths])

    def _deferred(self, full: str) -> bool:
        """Whether the put of ``full`` leaves its fsyncs to the end of the thread's batch
        (which then does them)."""
        objects = getattr(self._batch, "objects", None)
        if objects is None:
            return False
        objects.append(full)
        return True

    def _make_durable(self, objects: list[str]) -> None:
        """From SYNCFS_FROM objects on, one ``syncfs`` of each filesystem they are on (Linux),
        shared by the batches of every thread that end meanwhile: one journal commit instead
        of two fsyncs per object. A syncfs also waits for whatever else is dirty on that
        filesystem, so a small batch (and any batch where syncfs is missing) fsyncs each
        file, then each folder once."""
        try:
            if _syncfs is None or len(objects) < SYNCFS_FROM:
                _fsync_each(objects)
                return
            devices: dict[int, str] = {}
            for folder in dict.fromkeys(os.path.dirname(full) for full in objects):
                with contextlib.suppress(FileNotFoundError):  # deleted in the block: nothing to keep
                    devices.setdefault(os.stat(folder).st_dev, folder)
            for device, folder in devices.items():
                self._group_syncs.setdefault(device, _GroupSync()).sync(folder)
        except OSError as exc:
            raise StorageUnavailable(f"cannot make stored objects durable: {exc.strerror or exc}") from None

    def _write_meta(
        self, full: str, content_type: str, metadata: Mapping[str, str], *, durable: bool
    ) -> None:
        """The side file with the object's content type and metadata; ``durable``: on disk
        before its rename (else the batch's end makes it durable with the object)."""
        fd, tmp = _create_temporary(os.path.dirname(full))
        try:
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), FILE_MODE)
                out.write(_meta_bytes(content_type, metadata))
                if durable:  # a crash must not leave the object with an empty side file
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(tmp, full + _META_SUFFIX)
        except BaseException:
            _unlink(tmp)
            raise

    def _read_meta(self, full: str) -> dict:
        """The object's content type and metadata: its extended attribute, else its side file
        (an object stored where there were no attributes, or before they were used)."""
        try:
            return json.loads(os.getxattr(full, _XATTR))
        except (OSError, ValueError):
            pass
        try:
            with open(full + _META_SUFFIX, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def _open(self, path: str, start: int, stop: int | None) -> BinaryIO:
        """The open file itself for the whole object (it has a fileno, for sendfile);
        for a range, the file positioned at the start and cut at the stop."""
        full = self._full(path)
        try:
            f = open(full, "rb")  # noqa: SIM115 - the caller closes it
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(path) from None
        except OSError as exc:
            raise StorageUnavailable(f"cannot read {path}: {exc.strerror}") from None
        try:
            info = self._info(path, full, os.fstat(f.fileno()))
            if start == 0 and stop is None:
                return set_read_info(f, info, None)
            first, end = resolve_range(start, stop, info.size)
            f.seek(first)
        except BaseException:
            f.close()
            raise
        reader = io.BufferedReader(LimitedReader(f, end - first), 256 * 1024)
        return set_read_info(reader, info, (first, end))

    def _stat(self, path: str) -> ObjectInfo:
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

    def _metadata(self, path: str) -> dict[str, str]:
        """The metadata stored with the object (empty if none)."""
        self._stat(path)
        return self._read_meta(self._full(path)).get("metadata", {})

    def _delete(self, path: str) -> None:
        full = self._full(path)
        try:
            os.unlink(full)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageUnavailable(f"cannot delete {path}: {exc.strerror}") from None
        _unlink(full + _META_SUFFIX)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        """The objects below ``prefix`` in code-point order of their paths (as S3 and Swift list,
        and as fsck and migrate-storage walk them), reading only the folders the prefix reaches."""
        folder, _, start = prefix.rpartition("/")
        top = os.path.join(self.root, *folder.split("/")) if folder else self.root
        yield from self._walk(top, folder + "/" if folder else "", start)

    def _walk(self, full_folder: str, rel_folder: str, start: str) -> Iterator[ObjectInfo]:
        """The objects of one folder whose names begin with ``start``, subfolders included, in
        path order: a subfolder ``d`` sorts as ``d/``, where all of its paths sort."""
        try:
            with os.scandir(full_folder) as scan:
                entries = [e for e in scan if e.name.startswith(start)]
        except (FileNotFoundError, NotADirectoryError):
            return
        keyed = []
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            keyed.append((entry.name + "/" if is_dir else entry.name, is_dir, entry))
        keyed.sort(key=lambda k: k[0])
        for key, is_dir, entry in keyed:
            if is_dir:
                yield from self._walk(entry.path, rel_folder + key, "")
                continue
            if entry.name.startswith(".tmp-") or entry.name.endswith(_META_SUFFIX):
                continue
            try:
                st = os.stat(entry.path)
            except FileNotFoundError:
                continue
            yield self._info(rel_folder + entry.name, entry.path, st)

    def _public_url(self, path: str) -> str | None:
        return self.base_url + path if self.base_url else None

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


def _meta_bytes(content_type: str, metadata: Mapping[str, str]) -> bytes:
    """What the attribute or side file holds (dumps: the C encoder)."""
    return json.dumps({"content_type": content_type, "metadata": dict(metadata)}).encode()


def _create_temporary(folder: str) -> tuple[int, str]:
    """A new file ``folder/.tmp-<pid>-<n>`` open for writing (0600 until its fchmod)."""
    return create_numbered(folder, ".tmp-")


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


def _fsync_each(objects: list[str]) -> None:
    folders: dict[str, None] = {}
    for full in dict.fromkeys(objects):
        for name in (full, full + _META_SUFFIX):  # the object and its side file
            try:
                fd = os.open(name, os.O_RDONLY)
            except FileNotFoundError:
                continue  # deleted in the block: nothing to keep
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        folders[os.path.dirname(full)] = None
    for folder in folders:
        _fsync_dir(folder)


def _load_syncfs() -> Callable[[int], int] | None:
    """libc's ``syncfs(fd)`` (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_syncfs = _load_syncfs()


def syncfs(folder: str) -> None:
    """Write every dirty file and folder of the filesystem holding ``folder`` to disk
    (OSError when the kernel reports a write error)."""
    assert _syncfs is not None
    fd = os.open(folder, os.O_RDONLY)
    try:
        if _syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


class _GroupSync:
    """Group commit: a caller of ``sync`` returns once a syncfs that started after its call
    has finished. Callers that arrive while one runs share the next one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._started = 0
        self._finished = 0
        self._running = False
        #: (generation, error) of the last syncfs that failed.
        self._failed: tuple[int, OSError] | None = None

    def sync(self, folder: str) -> None:
        with self._cond:
            wanted = self._started + 1  # a syncfs already running may predate our writes
            while self._finished < wanted:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                self._started += 1
                generation = self._started
                error: OSError | None = None
                self._cond.release()
                try:
                    syncfs(folder)
                except OSError as exc:
                    error = exc
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._finished = generation
                    if error is not None:
                        self._failed = (generation, error)
                    self._cond.notify_all()
            if self._failed is not None and self._failed[0] >= wanted:
                raise self._failed[1]
