"""Swift's streaming writer: segments sent while the body arrives, one manifest at the end.

``SwiftStorage.begin_upload(path)`` returns one. The first ``threshold`` bytes
are kept in memory; a body that ends within them is stored by ``complete`` in
one PUT, as ``put`` stores a small file. A longer one becomes a Static Large
Object: one background thread sends its segments to the segment container
(``<prefix><path>/<upload id>/<n>``, the names ``put`` gives its segments,
so ``stale_temporaries`` finds a killed upload's) as chunked PUTs fed from a
bounded queue while the body arrives, and ``complete`` puts the manifest at
the path: only then does the object appear. ``abort`` breaks the segment PUT
off and deletes the segments sent.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

from storage.base import ObjectHeaders, StorageError, StorageUnavailable, Upload

if TYPE_CHECKING:
    from storage.swift import SwiftStorage

log = logging.getLogger(__name__)

#: Chunks queued for the segment thread before ``write`` waits (each is at most a read's size).
QUEUE_CHUNKS = 8
_END_SEGMENT = object()
_END = object()


class _Aborted(Exception):
    """Raised inside the segment PUT's body to break it off (the store keeps nothing of it)."""


class SwiftUpload(Upload):
    """One large-object upload in progress (see the module's docstring)."""

    #: Segments are sent from the bytes written, and ``read_back`` reads them from the store.
    reads_local_copy = False

    def __init__(self, store: SwiftStorage, path: str, headers: ObjectHeaders, *, threshold: int) -> None:
        super().__init__()
        self._store = store
        self._path = path
        self._name = store._name(path)
        self._group = f"{self._name}/{uuid.uuid4().hex}"
        self._threshold = threshold
        self._head = bytearray()
        self._queue: queue.Queue = queue.Queue(QUEUE_CHUNKS)
        self._thread: threading.Thread | None = None
        self._segment_bytes = 0
        self._aborting = False
        #: What the thread stored: manifest entries, in order.
        self._segments: list[dict[str, object]] = []
        self._error: StorageError | None = None
        #: The end was queued and the thread joined (``_finish``).
        self._finished = False

    # -- receiving ---------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._error is not None:
            return
        if self._thread is None:
            self._head += data
            if len(self._head) <= self._threshold:
                return
            data, self._head = bytes(self._head), bytearray()
            self._start()
        data = bytes(data)
        size = self._store.segment_size
        while data and self._error is None:
            room = size - self._segment_bytes
            if room == 0:
                self._put(_END_SEGMENT)
                self._segment_bytes, room = 0, size
            piece, data = data[:room], data[room:]
            self._put(piece)
            self._segment_bytes += len(piece)

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="swift-upload", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> None:
        """Queue for the segment thread; give up if it has stopped (its error is kept)."""
        while True:
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                if self._thread is None or not self._thread.is_alive():
                    return

    def _run(self) -> None:
        """The segment thread: one chunked PUT per segment, until the end (or an abort)."""
        try:
            first = self._get()
            conn = self._store._conn()
            with self._store._errors(f"storing {self._path}"):
                self._store._ensure_segment_container(conn)
            while first is not _END:
                segment = f"{self._group}/{len(self._segments):08d}"
                sent = [0]
                with self._store._errors(f"storing a segment of {self._path}"):
                    etag = conn.put_object(
                        self._store.segment_container, segment, contents=self._body(first, sent)
                    )
                self._segments.append(
                    {
                        "path": f"/{self._store.segment_container}/{segment}",
                        "etag": etag,
                        "size_bytes": sent[0],
                    }
                )
                first = self._get()
        except _Aborted:
            pass
        except StorageError as exc:
            self._error = exc
        except Exception as exc:  # whatever swiftclient raises for a broken body
            self._error = StorageUnavailable(self._store._scrub(f"storing {self._path}: {exc}"))
        finally:
            self._drain()

    def _get(self) -> object:
        while True:
            if self._aborting:
                raise _Aborted
            try:
                return self._queue.get(timeout=0.5)
            except queue.Empty:
                continue

    def _body(self, first: object, sent: list[int]) -> Iterator[bytes]:
        item = first
        while True:
            sent[0] += len(item)  # type: ignore[arg-type]
            yield item  # type: ignore[misc]
            item = self._get()
            if item is _END_SEGMENT:
                return
            if item is _END:
                self._queue.put(_END)  # seen again by _run: no segment follows
                return

    def _drain(self) -> None:
        """Empty the queue so a writer waiting on it goes on (the thread is ending)."""
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass

    # -- the end -----------------------------------------------------------------------------

    def _complete(self, path: str, headers: ObjectHeaders) -> None:
        store = self._store
        http_headers = store._http_headers(headers)
        if self._thread is None:  # small: one PUT at the path, as ``put`` stores it
            name = store._name(path)
            with store._errors(f"storing {path}"):
                replaced = store._segments_of(name)
                store._conn().put_object(
                    store.container, name, contents=bytes(self._head), headers=http_headers
                )
                store._delete_segments(replaced)
            self._head = bytearray()
            return
        if path != self._path:
            raise StorageError(f"Swift: an upload begun at {self._path} cannot complete at {path}")
        self._finish()
        with store._errors(f"storing {path}"):
            replaced = store._segments_of(self._name)
            store._conn().put_object(
                store.container,
                self._name,
                contents=json.dumps(self._segments),
                query_string="multipart-manifest=put",
                headers=http_headers,
            )
        self._segments = []  # the manifest owns them now
        store._delete_segments(replaced)

    def _finish(self) -> None:
        """End the last segment and wait until every segment is stored; raise the thread's error."""
        if not self._finished:
            self._finished = True
            self._put(_END)
            assert self._thread is not None
            self._thread.join()
        if self._error is not None:
            raise self._error

    def read_back(self, start: int, stop: int) -> bytes | None:
        """The bytes ``[start, stop)``: from memory for a small upload, else from the stored
        segments (ranged GETs; the last segment is ended first, so call it after the last write)."""
        if self._closed:
            raise ValueError("read_back on an upload that is completed or aborted")
        stop = min(stop, self.size)
        if start >= stop:
            return b""
        if self._thread is None:
            return bytes(self._head[start:stop])
        self._finish()
        store, out, offset = self._store, bytearray(), 0
        conn = store._conn()
        for segment in self._segments:
            size = int(segment["size_bytes"])  # type: ignore[call-overload]
            a, b = max(start, offset), min(stop, offset + size)
            if a < b:
                container, _, name = str(segment["path"]).lstrip("/").partition("/")
                with store._errors(f"reading back a segment of {self._path}"):
                    _, body = conn.get_object(
                        container, name, headers={"Range": f"bytes={a - offset}-{b - offset - 1}"}
                    )
                if len(body) != b - a:
                    raise StorageUnavailable(f"Swift: reading back {self._path}: a short segment read")
                out += body
            offset += size
        if len(out) != stop - start:
            raise StorageUnavailable(f"Swift: reading back {self._path}: fewer bytes stored than written")
        return bytes(out)

    def _abort(self) -> None:
        self._head = bytearray()
        if self._thread is not None:
            self._aborting = True
            self._thread.join()
        segments, self._segments = self._segments, []
        self._store._delete_segments([str(s["path"]) for s in segments])
