"""S3's streaming writer: a multipart upload whose parts are sent while the body arrives.

``S3Storage.begin_upload`` returns one. Parts of ``part_size`` bytes go to the
store on background threads, at most ``in_flight`` at once, each read from the
caller's ``local_copy`` as it is sent (without one, held in memory: about
``(in_flight + 1) * part_size`` whatever the object's size); the upload
is completed (CompleteMultipartUpload) only by ``complete``. Begun at its final
key, nothing is there before that call; begun without one (the final path is
not known yet), it is completed at a temporary key below ``TEMP_PREFIX`` and
copied server-side to the final key (CopyObject; UploadPartCopy above
5 GiB), then the temporary is deleted.
A body smaller than one part is sent by ``complete`` in one PUT.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from storage.base import ObjectHeaders, StorageError, Upload

if TYPE_CHECKING:
    from storage.s3 import S3Storage

log = logging.getLogger(__name__)

#: Below the store's prefix: where uploads whose final path is not known yet are written.
TEMP_PREFIX = ".tmp-uploads/"
#: S3 numbers parts 1 to 10,000.
MAX_PARTS = 10000
#: The largest object one CopyObject copies.
MAX_COPY_SIZE = 5 * 1024**3


class S3Upload(Upload):
    """One multipart upload in progress (see the module's docstring)."""

    def __init__(
        self,
        store: S3Storage,
        path: str | None,
        headers: ObjectHeaders,
        *,
        part_size: int,
        in_flight: int,
        local_copy: str | None = None,
    ) -> None:
        super().__init__()
        self._store = store
        self._client = store.client
        self._headers = headers
        self._temporary = path is None
        self._name = path if path is not None else TEMP_PREFIX + uuid.uuid4().hex
        self._key = store._key(self._name)
        self._part_size = part_size
        self._in_flight = max(1, in_flight)
        self._local_copy = local_copy
        self._buffer = bytearray()
        #: With a local copy: where the next part starts in it, and the bytes written past that.
        self._offset = 0
        self._unsent = 0
        self._upload_id: str | None = None
        self._next_part = 1
        self._parts: list[dict[str, Any]] = []
        self._pending: deque[Future] = deque()
        self._executor: ThreadPoolExecutor | None = None
        self._error: StorageError | None = None
        config = self._client.meta.config
        self._checksum = getattr(config, "request_checksum_calculation", None) == "when_supported"

    # -- receiving ---------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._error is not None:
            return  # the store failed: complete raises it; the rest of the body is not kept
        if self._local_copy is not None:
            # The bytes are in the caller's file already: parts are read from it as they are
            # sent, so memory does not grow with the parts in flight.
            self._unsent += len(data)
            while self._unsent >= self._part_size and self._error is None:
                self._send((self._offset, self._part_size))
                self._offset += self._part_size
                self._unsent -= self._part_size
            return
        self._buffer += data
        while len(self._buffer) >= self._part_size and self._error is None:
            with memoryview(self._buffer) as view:
                part = view[: self._part_size].tobytes()
            del self._buffer[: self._part_size]
            self._send(part)

    def _send(self, part: bytes | tuple[int, int]) -> None:
        """Queue one part; wait for the oldest while more than ``in_flight`` are under way."""
        if self._upload_id is None:
            args = self._store._object_args(self._headers)
            if self._checksum:
                args["ChecksumAlgorithm"] = "CRC32"
            try:
                with self._store._translated("start the multipart upload of", self._name):
                    started = self._client.create_multipart_upload(
                        Bucket=self._store.bucket, Key=self._key, **args
                    )
            except StorageError as exc:
                self._error = exc
                return
            self._upload_id = started["UploadId"]
        if self._next_part > MAX_PARTS:
            self._error = StorageError(f"S3: {self._name} needs more than {MAX_PARTS} parts")
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._in_flight, thread_name_prefix="s3-upload")
        self._pending.append(self._executor.submit(self._upload_part, self._next_part, part))
        self._next_part += 1
        while len(self._pending) > self._in_flight:
            self._collect(self._pending.popleft())

    def _upload_part(self, number: int, part: bytes | tuple[int, int]) -> dict[str, Any]:
        args: dict[str, Any] = {"ChecksumAlgorithm": "CRC32"} if self._checksum else {}
        with self._store._translated(f"store part {number} of", self._name), contextlib.ExitStack() as stack:
            if isinstance(part, tuple):
                f = stack.enter_context(open(str(self._local_copy), "rb"))
                body: Any = _Slice(f.fileno(), *part)
            else:
                body = part
            answer = self._client.upload_part(
                Bucket=self._store.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=body,
                **args,
            )
        part = {"PartNumber": number, "ETag": answer["ETag"]}
        if answer.get("ChecksumCRC32"):
            part["ChecksumCRC32"] = answer["ChecksumCRC32"]
        return part

    def _collect(self, future: Future) -> None:
        try:
            self._parts.append(future.result())
        except StorageError as exc:
            self._error = self._error or exc
        except Exception as exc:  # a thread's unexpected failure still fails the upload
            self._error = self._error or StorageError(f"S3: storing {self._name} failed: {exc}")

    def _drain(self) -> None:
        while self._pending:
            self._collect(self._pending.popleft())
        if self._error is not None:
            raise self._error

    # -- the end -----------------------------------------------------------------------------

    def _complete(self, path: str, headers: ObjectHeaders) -> None:
        store, bucket = self._store, self._store.bucket
        key = store._key(path)
        args = store._object_args(headers)
        self._drain()
        if self._upload_id is None:  # smaller than one part: one PUT, straight at the final key
            with store._translated("store", path):
                if self._local_copy is not None:
                    with open(self._local_copy, "rb") as f:
                        body = f.read(self._unsent)
                else:
                    body = bytes(self._buffer)
                self._client.put_object(Bucket=bucket, Key=key, Body=body, **args)
            self._buffer = bytearray()
            self._stop_threads()
            return
        if not self._temporary and key != self._key:
            # Begun at another key: an object must never appear there, so start over.
            self._abort()
            if self._local_copy is None:
                raise StorageError(f"S3: an upload begun at {self._name} cannot complete at {path}")
            store._put_file(path, self._local_copy, headers)
            return
        if self._unsent:
            self._send((self._offset, self._unsent))
            self._offset, self._unsent = self._offset + self._unsent, 0
        if self._buffer:
            self._send(bytes(self._buffer))
            self._buffer = bytearray()
        self._drain()
        self._stop_threads()
        with store._translated("complete the multipart upload of", path):
            self._client.complete_multipart_upload(
                Bucket=bucket, Key=self._key, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
            )
        self._upload_id = None
        if key == self._key and headers == self._headers:
            return
        # At a temporary key, or with other headers than expected: a server-side copy.
        try:
            with store._translated("copy the upload to", path):
                source = {"Bucket": bucket, "Key": self._key}
                args["MetadataDirective"] = "REPLACE"
                if self.size <= MAX_COPY_SIZE:  # one CopyObject
                    self._client.copy_object(CopySource=source, Bucket=bucket, Key=key, **args)
                else:  # UploadPartCopy, on the transfer manager's threads
                    self._client.copy(source, bucket, key, ExtraArgs=args, Config=store.transfer_config)
        except BaseException:
            self._delete_object(self._key)  # the temporary, or the final key's object with its old headers
            raise
        if self._key != key:
            self._delete_object(self._key)

    def _abort(self) -> None:
        self._buffer = bytearray()
        self._stop_threads(cancel=True)
        self._pending.clear()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            try:
                with self._store._translated("abort the multipart upload of", self._name):
                    self._client.abort_multipart_upload(
                        Bucket=self._store.bucket, Key=self._key, UploadId=upload_id
                    )
            except StorageError as exc:  # stale_temporaries lists it; leftovers aborts it later
                log.warning("could not abort the multipart upload of %s: %s", self._name, exc)

    def _stop_threads(self, cancel: bool = False) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=cancel)
            self._executor = None

    def _delete_object(self, key: str) -> None:
        try:
            with self._store._translated("delete", key):
                self._client.delete_object(Bucket=self._store.bucket, Key=key)
        except StorageError as exc:  # a temporary left: stale_temporaries lists it
            log.warning("could not delete %s: %s", key, exc)


class _Slice(io.RawIOBase):
    """``length`` bytes of an open file from ``start``, as a seekable file of its own (the body of
    one part: botocore reads it to sign and checksum, seeks back to 0 to send or retry)."""

    def __init__(self, fd: int, start: int, length: int) -> None:
        self._fd, self._start, self._length, self._pos = fd, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def __len__(self) -> int:
        return self._length

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._length}[whence]
        self._pos = min(max(0, base + offset), self._length)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._length - self._pos)
        if n <= 0:
            return 0
        data = os.pread(self._fd, n, self._start + self._pos)
        memoryview(buffer).cast("B")[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def read(self, size: int = -1) -> bytes:
        n = self._length - self._pos if size is None or size < 0 else min(size, self._length - self._pos)
        if n <= 0:
            return b""
        data = os.pread(self._fd, n, self._start + self._pos)
        self._pos += len(data)
        return data


def part_size_for(chunk_size: int, size_hint: int | None, max_part_size: int) -> int:
    """The configured chunk size, grown for a body whose expected size needs more than 10,000 parts."""
    if size_hint:
        chunk_size = max(chunk_size, -(-size_hint // (MAX_PARTS - 1)))
    return min(chunk_size, max_part_size)
