"""Reads a multipart upload form, spooling the file part to disk while hashing it.

One pass over the body: each chunk of the file part is written to a temporary
file and fed to md5, sha256 and blake2b-256 at once, so memory stays flat
whatever the file's size and the digests are ready when the body ends. A
``open_sink`` callback, asked when the file part starts (with the fields read
so far), may return a sink that receives the same chunks as they arrive: the
upload pipeline's streaming writer to the store (``Storage.begin_upload``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import tempfile
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

import multipart

from cloudpypi_base.settings import format_size

CHUNK = 1048576
#: Room for the form's text fields around the file itself: a request body may be this much
#: larger than ``[webui] max_upload_size`` (the upload view and the server both allow it).
FORM_OVERHEAD = 16 * 1024 * 1024
#: Bodies larger than this hash on several threads.
PARALLEL_HASHING_FROM = 4 * 1024 * 1024
#: A form field other than the file may be at most this long (a long description fits).
MAX_FIELD_SIZE = 8 * 1024 * 1024
#: A wheel streamed to a store that reads its bytes back (``Upload.read_back``), in a body of
#: known length, is not spooled whole: only what arrives in the body's last TAIL bytes is
#: written to the spool (a sparse file: a hole, then the tail), where a wheel's central
#: directory and, by the wheel spec's advice, its ``.dist-info`` files are; any other byte the
#: checks read comes back from the store.
TAIL = 8 * 1024 * 1024
#: Reading such a spool back: the bytes asked of the store at once, and the most requests one
#: upload's checks may make (a wheel of many small members spread out before its tail, each
#: read by the checks, must not turn into a request per member).
READ_BACK_BLOCK = 1024 * 1024
MAX_READ_BACKS = 256


#: The errors of a full disk or an exhausted quota.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
DISK_FULL_MESSAGE = (
    "Insufficient Storage: the server's disk for uploads is full, nothing was saved; retry the upload later"
)


class FormError(Exception):
    """The body is not an acceptable upload form; ``status`` is 400 or 413 (507: the spool disk is full)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Sink(Protocol):
    """Where the file's chunks also go while they arrive (``storage.Upload`` is one)."""

    def write(self, data: bytes) -> None: ...

    def abort(self) -> None: ...


#: ``open_sink(form so far, filename, spool path)``: a sink for the file part, or None.
SinkOpener = Callable[["Form", str, str], "Sink | None"]


@dataclass
class SpooledFile:
    """The uploaded file, on local disk, with the digests computed while it arrived.

    With ``kept_from`` > 0 the file at ``path`` holds only the bytes from that
    offset on (the rest is a hole): ``open`` reads the others with ``read_back``
    (the store's copy, ``Upload.read_back``).
    """

    filename: str
    path: str
    size: int
    md5: str
    sha256: str
    blake2_256: str
    kept_from: int = 0
    read_back: Callable[[int, int], bytes | None] | None = None

    def open(self) -> BinaryIO:
        if self.kept_from <= 0:
            return open(self.path, "rb")
        return io.BufferedReader(_TailFile(self), 64 * 1024)  # type: ignore[return-value]

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class _TailFile(io.RawIOBase):
    """A SpooledFile whose local file keeps only its tail: the other bytes are read back."""

    def __init__(self, spooled: SpooledFile) -> None:
        self._spooled = spooled
        self._f = open(spooled.path, "rb")
        self._pos = 0
        self._read_backs = 0
        #: The last block read back: (its offset, its bytes).
        self._block: tuple[int, bytes] = (0, b"")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._spooled.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        kept_from, size = self._spooled.kept_from, self._spooled.size
        n = min(len(buffer), size - self._pos)
        if n <= 0:
            return 0
        if self._pos >= kept_from:
            data = os.pread(self._f.fileno(), n, self._pos)
        else:
            data = self._read_back(min(n, kept_from - self._pos))
        memoryview(buffer).cast("B")[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def _read_back(self, n: int) -> bytes:
        """``n`` bytes at the position, from the last block read back or one more block of it."""
        start, block = self._block
        if not start <= self._pos < start + len(block):
            self._read_backs += 1
            if self._read_backs > MAX_READ_BACKS:
                raise ReadBackError(
                    f"the checks read more than {MAX_READ_BACKS} pieces of the upload before its last "
                    f"{TAIL // 1024 // 1024} MiB back from the store"
                )
            stop = min(self._pos + READ_BACK_BLOCK, self._spooled.kept_from)
            back = self._spooled.read_back
            got = back(self._pos, stop) if back is not None else None
            if got is None or len(got) != stop - self._pos:
                raise ReadBackError(f"cannot read bytes {self._pos}-{stop} of the upload back")
            start, block = self._block = (self._pos, got)
        return block[self._pos - start : self._pos - start + n]

    def close(self) -> None:
        self._f.close()
        super().close()


class ReadBackError(Exception):
    """The checks needed a byte of the upload that was not kept and the store could not return."""


@dataclass
class Form:
    """The text fields (each name may repeat) and the file part, if any."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    file: SpooledFile | None = None
    #: The sink ``open_sink`` gave for the file part, once the part is whole; ``close`` aborts it
    #: (which does nothing once its owner completed it).
    stream: Sink | None = None

    def get(self, name: str, default: str = "") -> str:
        values = self.fields.get(name)
        return values[0] if values else default

    def getall(self, name: str) -> list[str]:
        return [v for v in self.fields.get(name, []) if v]

    def close(self) -> None:
        if self.stream is not None:
            self.stream.abort()
        if self.file is not None:
            self.file.remove()


def boundary_of(content_type: str) -> str | None:
    """The multipart boundary of a ``multipart/form-data`` Content-Type, else None."""
    mime, options = multipart.parse_options_header(content_type or "")
    if mime != "multipart/form-data":
        return None
    return options.get("boundary") or None


def read_form(
    read: Callable[[int], bytes],
    *,
    content_type: str,
    content_length: int | None,
    max_file_size: int,
    tmp_dir: str,
    file_field: str = "content",
    open_sink: SinkOpener | None = None,
) -> Form:
    """Parse the body; raise FormError (400 malformed, 413 file too large, 507 spool disk full).

    The caller owns the returned form and must ``close()`` it to remove the spool
    (and abort the sink). A sink of a body that fails to parse is aborted here.
    """
    boundary = boundary_of(content_type)
    if boundary is None:
        raise FormError(400, "Invalid request: the body must be multipart/form-data")
    read, content_length = _with_crlf(read, content_length, boundary)
    parser = multipart.PushMultipartParser(
        boundary,
        content_length=-1 if content_length is None else content_length,
        max_header_count=16,
        max_segment_count=1000,
    )
    form = Form()
    body_read = [0]
    if content_length is not None:
        counted = read

        def read(size: int) -> bytes:
            data = counted(size)
            body_read[0] += len(data)
            return data

    state = _PartState(
        parallel_hashing=(content_length or 0) > PARALLEL_HASHING_FROM,
        open_sink=open_sink,
        body_left=None if content_length is None else (lambda: content_length - body_read[0]),
    )
    try:
        os.makedirs(tmp_dir, exist_ok=True)
        with parser:
            for event in parser.parse_blocking(read, CHUNK):
                if isinstance(event, multipart.MultipartSegment):
                    state.start(event, file_field, tmp_dir, form)
                elif event:
                    state.feed(event, max_file_size)
                else:
                    state.finish(form)
    except multipart.MultipartError as exc:
        state.abort()
        form.close()
        raise FormError(400, f"Invalid request: malformed multipart body ({exc})") from None
    except OSError as exc:
        state.abort()
        form.close()
        if exc.errno in DISK_FULL:  # creating, writing or closing the spool file: the partial file is gone
            raise FormError(507, DISK_FULL_MESSAGE) from None
        raise
    except BaseException:
        state.abort()
        form.close()
        raise
    return form


def _with_crlf(
    read: Callable[[int], bytes], content_length: int | None, boundary: str
) -> tuple[Callable[[int], bytes], int | None]:
    """The body to parse: as it arrives, or rewritten with CRLF if distutils register sent it.

    distutils ``setup.py register`` writes its form with bare LF line breaks
    (``\\n--BOUNDARY\\nContent-Disposition: ...\\n\\nvalue``), which the
    multipart parser rejects. Such a body (text fields only, and small) is
    read whole and rebuilt with CRLF around its boundaries and headers; the
    values are kept byte for byte. Any other body streams through unchanged.
    """
    delimiter = b"\n--" + boundary.encode("latin-1")
    first = b""
    while len(first) <= len(delimiter):
        chunk = read(CHUNK)
        if not chunk:
            break
        first += chunk
    if not first.startswith(delimiter + b"\n"):
        pending = [first]

        def chained(size: int) -> bytes:
            return pending.pop() if pending else read(size)

        return chained, content_length
    body = bytearray(first)
    while chunk := read(CHUNK):
        body += chunk
        if len(body) > MAX_FIELD_SIZE * 2:
            raise FormError(413, "Invalid request: the form is too large")
    end = delimiter + b"--"
    if end not in body:
        raise FormError(400, "Invalid request: malformed multipart body (no final boundary)")
    rebuilt = []
    for part in bytes(body[: body.rindex(end)]).split(delimiter)[1:]:
        headers, blank, value = part[1:].partition(b"\n\n")
        if not blank:
            raise FormError(400, "Invalid request: malformed multipart body (a part has no headers)")
        if value.endswith(b"\r\n"):
            value = value[:-1]  # distutils adds a LF after a value that ends with CR
        headers = headers.replace(b"\n", b"\r\n")
        rebuilt.append(delimiter[1:] + b"\r\n" + headers + b"\r\n\r\n" + value + b"\r\n")
    rebuilt.append(end[1:] + b"\r\n")
    data = b"".join(rebuilt)
    return io.BytesIO(data).read, len(data)


class _Digests:
    """md5, sha256 and blake2b-256 of one stream, computed as its chunks arrive.

    For large files md5 and blake2b each run on a thread of their own (hashlib
    releases the GIL), so the three digests cost about the time of the
    slowest instead of their sum. Each hash still sees the chunks in order.
    """

    #: Most chunks queued for a hashing thread before the reader waits.
    MAX_PENDING = 8

    def __init__(self, parallel: bool) -> None:
        self.md5 = hashlib.md5()
        self.sha256 = hashlib.sha256()
        self.blake2 = hashlib.blake2b(digest_size=32)
        self._workers = (
            [ThreadPoolExecutor(1, "hash-md5"), ThreadPoolExecutor(1, "hash-blake2")] if parallel else []
        )
        self._pending: deque[Future] = deque()

    def update(self, chunk: bytes) -> None:
        if not self._workers:
            self.md5.update(chunk)
            self.sha256.update(chunk)
            self.blake2.update(chunk)
            return
        self._pending.append(self._workers[0].submit(self.md5.update, chunk))
        self._pending.append(self._workers[1].submit(self.blake2.update, chunk))
        self.sha256.update(chunk)
        while len(self._pending) > 2 * self.MAX_PENDING:
            self._pending.popleft().result()

    def hexdigests(self) -> tuple[str, str, str]:
        """(md5, sha256, blake2b-256), once every chunk is hashed."""
        while self._pending:
            self._pending.popleft().result()
        self.close()
        return self.md5.hexdigest(), self.sha256.hexdigest(), self.blake2.hexdigest()

    def close(self) -> None:
        for worker in self._workers:
            worker.shutdown(wait=True, cancel_futures=True)
        self._workers = []


class _PartState:
    """The part being read: a text field buffered in memory, or the file spooled to disk."""

    def __init__(
        self,
        parallel_hashing: bool = False,
        open_sink: SinkOpener | None = None,
        body_left: Callable[[], int] | None = None,
    ) -> None:
        self.parallel_hashing = parallel_hashing
        self.open_sink = open_sink
        self.sink: Sink | None = None
        self.name = ""
        self.filename: str | None = None
        self.text: list[bytes] = []
        self.text_size = 0
        self.out: BinaryIO | None = None
        self.tmp_path = ""
        self.size = 0
        self.digests: _Digests | None = None
        #: The bytes of the body not read yet (None: its length is not known).
        self.body_left = body_left
        #: Keeping only the file's tail (the sink reads the other bytes back): the file offset
        #: from which the spool holds the bytes (None: all of them, the ordinary spool).
        self.kept_from: int | None = None
        #: Whether the tail has begun (the chunks are written from ``kept_from`` on).
        self.keeping = False

    def start(self, seg: multipart.MultipartSegment, file_field: str, tmp_dir: str, form: Form) -> None:
        self.name = seg.name or ""
        self.text, self.text_size, self.size = [], 0, 0
        if self.name == file_field and seg.filename is not None:
            if form.file is not None:
                raise FormError(400, "Invalid request: more than one file in the upload")
            self.filename = seg.filename
            fd, self.tmp_path = tempfile.mkstemp(dir=tmp_dir, prefix="upload-")
            self.out = os.fdopen(fd, "wb")
            self.digests = _Digests(self.parallel_hashing)
            if self.open_sink is not None:
                self.sink = self.open_sink(form, self.filename, self.tmp_path)
                if (
                    self.sink is not None
                    and self.body_left is not None
                    and not getattr(self.sink, "reads_local_copy", True)
                    and self.filename.endswith(".whl")
                ):
                    self.kept_from, self.keeping = 0, False
        else:
            self.filename = None
            self.out = None

    def feed(self, chunk: bytes, max_file_size: int) -> None:
        if self.out is not None:
            self.size += len(chunk)
            if self.size > max_file_size:
                raise FormError(413, f"File too large. Limit for uploads is {format_size(max_file_size)}.")
            self.digests.update(chunk)
            if self.kept_from is not None:  # the sink reads the rest back: spool the tail only
                if not self.keeping and self.body_left() < TAIL:  # type: ignore[misc]
                    # The last TAIL bytes of the body (at least) from here: spooled at their
                    # offset, after a hole.
                    self.keeping, self.kept_from = True, self.size - len(chunk)
                    self.out.seek(self.kept_from)
                if self.keeping:
                    self.out.write(chunk)
                self.sink.write(chunk)  # type: ignore[union-attr]
                return
            self.out.write(chunk)
            if self.sink is not None:
                self.out.flush()  # the sink may read its bytes from the spool file
                self.sink.write(chunk)
            return
        self.text_size += len(chunk)
        if self.text_size > MAX_FIELD_SIZE:
            raise FormError(413, f"Invalid request: the field {self.name!r} is too large")
        self.text.append(chunk)

    def finish(self, form: Form) -> None:
        if self.out is not None:
            kept_from, read_back = 0, None
            if self.kept_from is not None:  # a sparse file: a hole, then the tail
                kept_from = self.kept_from if self.keeping else self.size
                self.out.truncate(self.size)
                read_back = getattr(self.sink, "read_back", None)
                self.kept_from, self.keeping = None, False
            self.out.close()
            self.out = None
            md5, sha256, b2 = self.digests.hexdigests()
            form.file = SpooledFile(
                self.filename or "", self.tmp_path, self.size, md5, sha256, b2, kept_from, read_back
            )
            form.stream, self.sink = self.sink, None
            self.tmp_path = ""
            return
        try:
            value = b"".join(self.text).decode("utf-8")
        except UnicodeDecodeError:
            raise FormError(400, f"Invalid request: the field {self.name!r} is not UTF-8") from None
        form.fields.setdefault(self.name, []).append(value)

    def abort(self) -> None:
        if self.sink is not None:
            self.sink.abort()
            self.sink = None
        if self.digests is not None:
            self.digests.close()
        if self.out is not None:
            with contextlib.suppress(OSError):  # a full disk fails the flush again
                self.out.close()
            self.out = None
        if self.tmp_path:
            try:
                os.unlink(self.tmp_path)
            except FileNotFoundError:
                pass
            self.tmp_path = ""
