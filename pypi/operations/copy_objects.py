"""Copy the objects the database references from one storage backend to another.

The engine behind ``cloudpypi migrate-storage``; it knows nothing of the
command line. Each object is:

- skipped when the target already holds it with the expected size (and, with
  ``verify``, the expected SHA-256, read back from the target), so a migration
  can be interrupted and run again. The target's listing (one request per page
  instead of one per object) is walked beside the objects, both in path order,
  so neither is ever held whole; an object the listing shows with another size
  is looked at again with ``stat`` before it is recopied;
- otherwise read from the source while its SHA-256 is computed, into a spool
  (memory up to a few MiB, then a temporary file), and stored in the target
  only when the digest and size match the database: a damaged source object
  is never copied;
- retried with exponential backoff when a step fails, and reported by name
  (``on_failure``) when every attempt failed. Nothing is skipped silently.

What a dry run would copy is handed to ``on_planned`` as it is found; the result keeps
counts and the first ``FAILURES_KEPT`` failures, so memory stays flat at any size.

Objects are stored with the content type and metadata the upload pipeline
gives them (``pypi.index.objects``).
"""

from __future__ import annotations

import enum
import hashlib
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import BinaryIO, NamedTuple, TextIO

import storage
from cloudpypi_base.settings import format_size
from pypi.index.objects import PACKAGES_PREFIX, StoredObject

CHUNK = 1024 * 1024
#: An object up to this size is spooled in memory; a larger one in a temporary file.
SPOOL_IN_MEMORY = 8 * 1024 * 1024
#: What the target's listing says of an object besides its size: not there, or not known.
_ABSENT = -1
_UNKNOWN = -2


class CorruptObject(Exception):
    """What was read does not match the database (size or SHA-256)."""


class Outcome(enum.Enum):
    COPIED = "copied"
    SKIPPED = "skipped"
    #: A dry run found that the object would be copied.
    PLANNED = "would copy"
    FAILED = "failed"


@dataclass(frozen=True)
class Failure:
    """An object that could not be copied, and why."""

    path: str
    filename: str
    error: str
    attempts: int


#: Failures a MigrationResult keeps (every one is also handed to ``on_failure`` as it happens).
FAILURES_KEPT = 1000


@dataclass
class MigrationResult:
    total: int = 0
    copied: int = 0
    skipped: int = 0
    #: For a dry run: objects that would be copied (each handed to ``on_planned``).
    planned: int = 0
    failed: int = 0
    #: The first FAILURES_KEPT failures (``failed`` counts them all).
    failures: list[Failure] = field(default_factory=list)
    #: Bytes copied (for a dry run: bytes that would be copied, where known).
    bytes: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self, *, dry_run: bool = False) -> str:
        if dry_run:
            return (
                f"dry run: {self.planned} of {self.total} objects would be copied "
                f"({format_size(self.bytes)} known), {self.skipped} already there, "
                f"{self.failed} failed, in {self.seconds:.1f} s"
            )
        rate = self.bytes / self.seconds if self.seconds > 0 else 0.0
        return (
            f"copied {self.copied}, skipped {self.skipped}, failed {self.failed} "
            f"of {self.total} objects; {self.bytes} bytes ({format_size(self.bytes)}) "
            f"in {self.seconds:.1f} s ({format_size(rate)}/s)"
        )


class _Done(NamedTuple):
    obj: StoredObject
    outcome: Outcome
    nbytes: int = 0
    failure: Failure | None = None


class Progress:
    """Progress on a stream: one line redrawn with ``\\r`` on a terminal, else a line every ``interval`` s."""

    def __init__(
        self,
        total: int,
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        interval: float = 10.0,
        label: str = "migrate-storage",
    ) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = 0.1 if self.tty else interval
        self.label = label
        self.counts = {o: 0 for o in Outcome}
        self.bytes = 0
        self.started = time.monotonic()
        self._last = self.started
        self._lock = threading.Lock()
        self._width = 0

    def update(self, outcome: Outcome, nbytes: int = 0) -> None:
        with self._lock:
            self.counts[outcome] += 1
            self.bytes += nbytes
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last = now
                self._draw(now)

    def note(self, message: str) -> None:
        """Print a line (a failure) without garbling the progress line."""
        with self._lock:
            if self.tty and self._width:
                self.stream.write("\r" + " " * self._width + "\r")
            self.stream.write(message + "\n")
            self._width = 0
            self.stream.flush()

    def finish(self) -> None:
        with self._lock:
            self._draw(time.monotonic())
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()
            self._width = 0

    def _line(self, now: float) -> str:
        done = sum(self.counts.values())
        elapsed = max(now - self.started, 1e-9)
        parts = [f"{done}/{self.total}"]
        for outcome in Outcome:
            if self.counts[outcome]:
                parts.append(f"{outcome.value} {self.counts[outcome]}")
        parts.append(f"{format_size(self.bytes)} ({format_size(self.bytes / elapsed)}/s)")
        text = ", ".join(parts)
        if not self.tty:
            return f"{self.label}: {text}"
        width = 24
        filled = int(width * done / self.total) if self.total else width
        return f"[{'#' * filled}{'.' * (width - filled)}] {text}"

    def _draw(self, now: float) -> None:
        line = self._line(now)
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


class Migration:
    """Copies objects from ``source`` to ``target`` with ``jobs`` threads.

    Both backends must be safe to use from several threads (the built-in ones are).
    """

    def __init__(
        self,
        source: storage.Storage,
        target: storage.Storage,
        *,
        jobs: int = 4,
        verify: bool = False,
        dry_run: bool = False,
        attempts: int = 3,
        backoff: float = 0.5,
        progress: Progress | None = None,
        on_failure: Callable[[Failure], None] | None = None,
        on_planned: Callable[[StoredObject], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        list_prefix: str | None = PACKAGES_PREFIX,
        cache_control: str | None = None,
    ) -> None:
        if jobs < 1:
            raise ValueError("jobs must be at least 1")
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.source = source
        self.target = target
        self.jobs = jobs
        self.verify = verify
        self.dry_run = dry_run
        self.attempts = attempts
        self.backoff = backoff
        self.progress = progress
        #: Called (on the calling thread) with each object that cannot be copied, as it is found.
        self.on_failure = on_failure
        #: For a dry run: called (on the calling thread) with each object that would be copied.
        self.on_planned = on_planned
        self.sleep = sleep
        #: Objects below this prefix are looked up in the target's listing, walked beside them
        #: (None: one ``stat`` per object instead).
        self.list_prefix = list_prefix
        #: The Cache-Control objects are stored with (the cache policy's FILE rule).
        self.cache_control = cache_control

    def run(self, objects: Iterable[StoredObject], *, total: int | None = None) -> MigrationResult:
        """Copy (or, for a dry run, check) every object; never raises for one object's failure.

        ``objects`` may be a stream (pypi.index.stream.referenced_objects): it is read as the
        copies go, never held whole; ``total`` is its length where known beforehand. Objects
        in path order (as that stream yields them) are matched against the target's listing
        in one walk; one out of order is looked up with ``stat``.
        """
        if total is None:
            objects = list(objects)
            total = len(objects)
        result = MigrationResult(total=total)
        started = time.monotonic()
        listing = _TargetListing(self.target, self.list_prefix)
        window = self.jobs * 4
        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="migrate") as pool:
            pending: set[Future[list[_Done]]] = set()

            def collect() -> None:
                nonlocal pending
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    for one in future.result():
                        self._collect(result, *one)

            group: list[tuple[StoredObject, int]] = []
            size = 0
            try:
                for obj in objects:
                    listed = listing.size_of(obj.path)
                    if listed == _ABSENT and self.dry_run:  # decided without asking the store
                        self._collect(result, obj, Outcome.PLANNED, obj.size or 0)
                        continue
                    if listed >= 0 and listed == obj.size and not self.verify:
                        self._collect(result, obj, Outcome.SKIPPED)
                        continue
                    group.append((obj, listed))  # for a thread: a copy, or a look with stat
                    size += obj.size or 0
                    if len(group) >= GROUP_OBJECTS or size >= GROUP_BYTES:
                        pending.add(pool.submit(self._some, group))
                        group, size = [], 0
                        if len(pending) >= window:
                            collect()
                if group:
                    pending.add(pool.submit(self._some, group))
                while pending:
                    collect()
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
        result.seconds = time.monotonic() - started
        if self.progress is not None:
            self.progress.finish()
        return result

    def _collect(
        self,
        result: MigrationResult,
        obj: StoredObject,
        outcome: Outcome,
        nbytes: int = 0,
        failure: Failure | None = None,
    ) -> None:
        if outcome is Outcome.COPIED:
            result.copied += 1
            result.bytes += nbytes
        elif outcome is Outcome.SKIPPED:
            result.skipped += 1
        elif outcome is Outcome.PLANNED:
            result.planned += 1
            result.bytes += nbytes
            if self.on_planned is not None:
                self.on_planned(obj)
        else:
            assert failure is not None
            result.failed += 1
            if len(result.failures) < FAILURES_KEPT:
                result.failures.append(failure)
            if self.on_failure is not None:
                self.on_failure(failure)
        if self.progress is not None:
            self.progress.update(outcome, nbytes if outcome is Outcome.COPIED else 0)

    # -- one object ----------------------------------------------------------------------

    def _some(self, group: list[tuple[StoredObject, int]]) -> list[_Done]:
        return [self._one(obj, listed) for obj, listed in group]

    def _one(self, obj: StoredObject, listed: int = _UNKNOWN) -> _Done:
        """Check and copy one object, with retries; the outcome, never an exception.

        ``listed`` is what the target's listing says: its size there, _ABSENT or _UNKNOWN.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                if not self._needs_copy(obj, listed):
                    return _Done(obj, Outcome.SKIPPED)
                if self.dry_run:
                    return _Done(obj, Outcome.PLANNED, obj.size or 0)
                return _Done(obj, Outcome.COPIED, self._copy(obj))
            except _SourceMissing:
                return self._failed(obj, "missing from the source storage", attempt)
            except storage.StorageMisconfigured as exc:
                return self._failed(obj, f"{exc}", attempt)
            except (storage.StorageError, CorruptObject, OSError) as exc:
                if attempt >= self.attempts:
                    return self._failed(obj, _describe(exc), attempt)
                self.sleep(self.backoff * 2 ** (attempt - 1))
            except Exception as exc:  # a bug or a plugin's stray exception: report it, do not retry
                return self._failed(obj, _describe(exc), attempt)

    def _failed(self, obj: StoredObject, error: str, attempts: int) -> _Done:
        return _Done(obj, Outcome.FAILED, failure=Failure(obj.path, obj.filename, error, attempts))

    def _needs_copy(self, obj: StoredObject, listed: int) -> bool:
        """Whether the target lacks the object or holds a different one."""
        if listed == _ABSENT:
            return True
        if listed >= 0 and obj.size is not None and listed == obj.size and not self.verify:
            return False
        try:
            info = self.target.stat(obj.path)
        except storage.NotFound:
            return True
        expected = obj.size
        if expected is None:  # a .metadata object: the database does not record its size
            try:
                expected = self.source.stat(obj.path).size
            except storage.NotFound:
                raise _SourceMissing from None
        if info.size != expected:
            return True
        if self.verify:
            digest, _ = sha256_of(self.target, obj.path)
            return digest != obj.sha256
        return False

    def _copy(self, obj: StoredObject) -> int:
        """Read the source object, check it against the database, store it; the bytes copied."""
        try:
            f = self.source.open(obj.path)
        except storage.NotFound:
            raise _SourceMissing from None
        with f, tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
            digest = hashlib.sha256()
            size = 0
            while True:
                block = f.read(CHUNK)
                if not block:
                    break
                digest.update(block)
                spool.write(block)
                size += len(block)
            if obj.size is not None and size != obj.size:
                raise CorruptObject(
                    f"source object is {size} bytes, the database says {obj.size}: not copied"
                )
            if digest.hexdigest() != obj.sha256:
                raise CorruptObject(
                    f"source object has sha256 {digest.hexdigest()}, the database says "
                    f"{obj.sha256}: not copied"
                )
            spool.seek(0)
            self.target.put(
                obj.path,
                spool,  # type: ignore[arg-type]
                content_type=obj.content_type,
                metadata=dict(obj.metadata),
                cache_control=self.cache_control,
            )
        return size


class _SourceMissing(Exception):
    pass


#: Objects handed to a thread together: up to GROUP_OBJECTS, or fewer that add up to GROUP_BYTES
#: (one large file is a group of its own). Millions of small checks cost a future each otherwise.
GROUP_OBJECTS = 32
GROUP_BYTES = 8 * 1024 * 1024


class _TargetListing:
    """The target's listing below ``prefix``, walked forward beside objects in path order.

    Stores list in path order (S3, Swift, local folders). When one does not, or its listing
    fails part-way, every later object is looked up with ``stat``; an object taken for
    absent before that is at worst copied again (a dry run counts it as to be copied).
    """

    def __init__(self, target: storage.Storage, prefix: str | None) -> None:
        self.prefix = prefix
        self._target = target
        self._entries: Iterator[storage.ObjectInfo] | None = None
        self._current: storage.ObjectInfo | None = None
        self._usable = prefix is not None
        self._started = False
        self._last = ""

    def size_of(self, path: str) -> int:
        """The size the listing shows for ``path``, _ABSENT, or _UNKNOWN (ask with ``stat``)."""
        if not self._usable or not path.startswith(self.prefix):  # type: ignore[arg-type]
            return _UNKNOWN
        if path < self._last:  # the objects came out of path order: the walk cannot go back
            return _UNKNOWN
        self._last = path
        try:
            if not self._started:
                self._started = True
                self._entries = iter(self._target.list(self.prefix))  # type: ignore[arg-type]
                self._current = next(self._entries, None)
            current = self._current
            while current is not None and current.path < path:
                previous = current.path
                current = next(self._entries, None)  # type: ignore[arg-type]
                if current is not None and current.path < previous:
                    self._usable = False  # listed out of order
                    return _UNKNOWN
            self._current = current
        except storage.StorageError:
            self._usable = False
            return _UNKNOWN
        if current is not None and current.path == path:
            return current.size
        return _ABSENT


def _hash(f: BinaryIO) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while True:
        block = f.read(CHUNK)
        if not block:
            return digest.hexdigest(), size
        digest.update(block)
        size += len(block)


def sha256_of(store: storage.Storage, path: str) -> tuple[str, int]:
    """The SHA-256 hex digest and size of a stored object, read in full."""
    with store.open(path) as f:
        return _hash(f)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (storage.StorageError, CorruptObject)):
        return text
    return f"{type(exc).__name__}: {text}"
