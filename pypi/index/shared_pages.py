"""Rendered pages with their gzip form, and large ones kept in the database (table stored_pages).

Large project pages (10,000 files: the simple page, the JSON API) are stored for
every process keyed by the project's serial, so one process renders them for the
deployment. The whole-index pages are kept as segments instead (pypi.index.segmented).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pypi.index.db import DatabaseError, Tx

log = logging.getLogger(__name__)

#: Pages at least this large are stored in the database for every process; smaller ones
#: are cheaper to render than to fetch.
STORE_MIN_BYTES = 256 * 1024
GZIP_LEVEL = 6
#: Pages written from a stream (/simple/, the XML-RPC lists: tens of MB) are compressed faster,
#: and only their gzip form is kept: a client that does not accept gzip gets it decompressed
#: as it is sent. Each process then holds a few MB for them, not a hundred.
STREAM_GZIP_LEVEL = 1


@dataclass(frozen=True)
class Page:
    """A rendered page, its gzip form and its ETag; ``version`` is what it was rendered from."""

    body: bytes
    gzip: bytes
    etag: str
    version: str
    #: time.time() when it was rendered.
    rendered: float = 0.0
    #: The length of the page (``body`` is empty when only the gzip form is kept).
    size: int = -1

    @property
    def has_body(self) -> bool:
        return self.size < 0 or len(self.body) == self.size

    @property
    def length(self) -> int:
        return len(self.body) if self.size < 0 else self.size

    @property
    def nbytes(self) -> int:
        """The bytes it holds (for the render cache's bound)."""
        return len(self.body) + len(self.gzip)

    @property
    def gzip_length(self) -> int:
        return len(self.gzip)

    def gzip_iter(self) -> list[bytes]:
        return [self.gzip]

    def identity_chunks(self) -> list[bytes] | Iterator[bytes]:
        """The page uncompressed: the body, or the gzip form decompressed as it is sent."""
        return [self.body] if self.has_body else gunzipped(self.gzip)


def make_page(body: bytes | Iterable[bytes], version: str) -> Page:
    """A Page from the body (or its chunks, compressed as they come)."""
    if isinstance(body, bytes):
        return Page(
            body,
            gzip.compress(body, GZIP_LEVEL, mtime=0),
            hashlib.md5(body).hexdigest(),
            version,
            time.time(),
        )
    md5 = hashlib.md5()
    size = 0
    packed: list[bytes] = []
    z = zlib.compressobj(STREAM_GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: a gzip header and trailer
    for chunk in body:
        md5.update(chunk)
        size += len(chunk)
        packed.append(z.compress(chunk))
    packed.append(z.flush())
    return Page(b"", b"".join(packed), md5.hexdigest(), version, time.time(), size)


def gunzipped(data: bytes, block: int = 1 << 20) -> Iterator[bytes]:
    """The decompressed form of ``data``, in blocks (memory stays at one block)."""
    z = zlib.decompressobj(31)
    for start in range(0, len(data), block // 8):
        out = z.decompress(data[start : start + block // 8])
        if out:
            yield out
    tail = z.flush()
    if tail:
        yield tail


def store(tx: Tx, page: str, value: Page) -> None:
    """Insert or replace the stored page."""
    tx.execute(
        "INSERT INTO stored_pages (page, version, etag, body, gzip_body, rendered, size) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (page) DO UPDATE SET version = excluded.version, etag = excluded.etag, "
        "body = excluded.body, gzip_body = excluded.gzip_body, rendered = excluded.rendered, "
        "size = excluded.size",
        (
            page,
            value.version,
            value.etag,
            tx.blob(value.body),
            tx.blob(value.gzip),
            iso_time(value.rendered),
            value.length,
        ),
    )


def stored(tx: Tx, page: str, version: str) -> Page | None:
    """The stored page at exactly ``version``, or None."""
    row = tx.one(
        "SELECT version, etag, body, gzip_body, rendered, size FROM stored_pages "
        "WHERE page = ? AND version = ?",
        (page, version),
    )
    if row is None:
        return None
    return Page(
        bytes(row["body"]),
        bytes(row["gzip_body"]),
        row["etag"],
        row["version"],
        _epoch(row["rendered"]),
        int(row["size"]),
    )


def store_large(tx: Tx, page: str, value: Page) -> None:
    """Store ``value`` for every process if it is large enough to be worth fetching.

    Best effort, inside the caller's (reading) transaction: a failure only means
    another process renders the page too.
    """
    if len(value.body) < STORE_MIN_BYTES:
        return
    try:
        store(tx, page, value)
    except DatabaseError as exc:
        log.info("could not store %s: %s", page, exc)


def iso_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1e6):06d}Z"


def _epoch(iso: str) -> float:
    import calendar

    head, _, frac = iso.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S")) + float("0." + (frac or "0"))
