"""Whole-index pages kept in the database as sorted segments, updated by insertion.

``/simple/`` (HTML and JSON) and the XML-RPC ``list_packages`` lists are one
entry per project, 600,000 at pypi.org's size. Each is stored as segments of
about ``SEGMENT_ROWS`` consecutive names (table ``stored_segments``, keyed by the
first name of the range, ``lo``) plus a version row in ``stored_pages``. A
change re-renders only the segments whose ranges hold the names the journal
says changed since the stored version (a new project: one segment of a few
thousand names), never the 600,000; a segment grown past twice its size is
split, an emptied one dropped.

Each segment is stored with its raw deflate stream (sync-flushed, so streams
concatenate) and its CRC-32, so the gzip form of the whole page is the gzip
header, the segments' deflate streams, a final empty block and a trailer
combined from the CRCs: one gzip member any client decodes, and no
recompression of the page. A process holds the segments it read and, when the
version moves, fetches only the segments re-rendered since (one query, one
snapshot). The update runs under an advisory lock in one process of the
deployment; the others serve the page they hold meanwhile.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

from packaging.utils import canonicalize_name

from pypi.index import stream
from pypi.index.db import Database, DatabaseError, Tx
from pypi.index.shared_pages import iso_time

#: Names per segment when the page is built whole; a segment is split past twice this.
SEGMENT_ROWS = 4000
#: More names changed than this since the stored version: the page is built whole again.
MAX_CHANGES = 2000
LEVEL = 6
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
#: A final deflate block with no data (fixed Huffman, end of block): closes the concatenation.
FINAL_BLOCK = b"\x03\x00"
#: The journal actions that add a name to, or take one from, the name lists (all or public).
NAME_ACTIONS = "('create', 'remove project', 'visibility private', 'visibility public')"
NAME_SET_SQL = f"SELECT MAX(id) FROM journal WHERE action IN {NAME_ACTIONS}"
NAME_CHANGES_SQL = f"SELECT DISTINCT name FROM journal WHERE id > ? AND id <= ? AND action IN {NAME_ACTIONS}"
SERIAL_SQL = "SELECT value FROM serials WHERE id = 1"
SERIAL_CHANGES_SQL = "SELECT DISTINCT name FROM journal WHERE id > ? AND id <= ?"
#: A page's name ends so when it lists the public projects only (Spec.everything_page).
PUBLIC_SUFFIX = "/public"
_PUBLIC = " AND NOT EXISTS (SELECT 1 FROM private_projects v WHERE v.project_id = projects.id)"
#: Seconds a request for a page its process does not hold yet waits while another process
#: builds it (``prepare`` at a server's start); then it is answered from the database instead.
LOCK_WAIT = 5.0


def deflate(data: bytes) -> bytes:
    """``data`` as a raw deflate stream that another can follow (sync-flushed, not final)."""
    z = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)
    return z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)


def inflate(data: bytes) -> bytes:
    return zlib.decompressobj(-15).decompress(data)


# -- CRC-32 of a concatenation from the parts' CRCs (zlib's crc32_combine) ------------


def _times(mat: list[int], vec: int) -> int:
    out, i = 0, 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _square(mat: list[int]) -> list[int]:
    return [_times(mat, mat[n]) for n in range(32)]


def _zero_operators() -> list[list[int]]:
    """Operator k appends 2**k zero bytes to a CRC."""
    one_bit = [0xEDB88320] + [1 << n for n in range(31)]
    op = _square(_square(_square(one_bit)))  # 8 zero bits: one byte
    ops = [op]
    for _ in range(63):
        op = _square(op)
        ops.append(op)
    return ops


_OPS = _zero_operators()


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC-32 of A + B from crc(A), crc(B) and len(B)."""
    k = 0
    while len2:
        if len2 & 1:
            crc1 = _times(_OPS[k], crc1)
        len2 >>= 1
        k += 1
    return crc1 ^ crc2


# -- what a page is made of -------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One segmented page: where it is stored, what it lists and how each row is written."""

    page: str
    #: ``SELECT name, normalized_name, last_serial FROM projects`` rows -> their entries, joined.
    entries: Callable[[Sequence[tuple]], str]
    #: The page's opening, given its version (the JSON index carries its serial).
    head: Callable[[int], bytes]
    tail: bytes
    #: What separates two entries (", " in JSON).
    joiner: bytes = b""
    #: Whether the version is the name set's (else the index's serial).
    names_only: bool = True
    #: Only public projects (the page for readers from whom private projects are hidden).
    public: bool = False
    #: Whether processes hold the uncompressed segments too (served identity at full speed).
    keep_body: bool = False

    @property
    def everything_page(self) -> str:
        """The page of every project a public page (named ``<that page>/public``, written the
        same way) lists the public part of: built whole together, the public one is a copy of
        its segments but those holding private projects."""
        return self.page.removesuffix(PUBLIC_SUFFIX)

    @property
    def version_sql(self) -> str:
        return NAME_SET_SQL if self.names_only else SERIAL_SQL

    @property
    def changes_sql(self) -> str:
        return NAME_CHANGES_SQL if self.names_only else SERIAL_CHANGES_SQL

    def rows_sql(self, lo: str | None, hi: str | None) -> tuple[str, list]:
        where, params = "1 = 1", []
        if lo:
            where += " AND normalized_name >= ?"
            params.append(lo)
        if hi is not None:
            where += " AND normalized_name < ?"
            params.append(hi)
        if self.public:
            where += _PUBLIC
        sql = (
            f"SELECT name, normalized_name, last_serial FROM projects WHERE {where} ORDER BY normalized_name"
        )
        return sql, params


@dataclass(frozen=True)
class Segment:
    lo: str
    version: int
    etag: str
    length: int
    crc: int
    deflate: bytes
    #: The uncompressed entries, or b"" when the process keeps only ``deflate``.
    body: bytes = b""

    def text(self) -> bytes:
        return self.body if self.body or not self.length else inflate(self.deflate)


@dataclass(frozen=True)
class Assembled:
    """A segmented page as a process holds it; sent as a list of chunks, never joined."""

    spec: Spec
    version: int
    segments: tuple[Segment, ...]
    loaded: float
    head: bytes = b""
    etag: str = ""
    length: int = 0
    gzip_parts: tuple[bytes, ...] = ()
    gzip_length: int = 0

    @property
    def rendered(self) -> float:
        return self.loaded

    @property
    def nbytes(self) -> int:
        return sum(len(s.deflate) + len(s.body) for s in self.segments)

    def identity_iter(self) -> Iterator[bytes]:
        """The page uncompressed, in chunks (held segments as they are, others inflated one at a time)."""
        yield self.head
        first = True
        for s in self.segments:
            if not s.length:
                continue
            if not first and self.spec.joiner:
                yield self.spec.joiner
            first = False
            yield s.text()
        yield self.spec.tail

    def identity_chunks(self) -> Sequence[bytes] | Iterator[bytes]:
        if self.spec.keep_body:
            return list(self.identity_iter())
        return self.identity_iter()

    def gzip_iter(self) -> Sequence[bytes]:
        return self.gzip_parts

    @property
    def body(self) -> bytes:
        """The whole page joined (tests and small pages only)."""
        return b"".join(self.identity_iter())


def assemble(spec: Spec, version: int, segments: Sequence[Segment]) -> Assembled:
    head = spec.head(version)
    crc = zlib.crc32(head)
    length = len(head)
    parts = [GZIP_HEADER, deflate(head)]
    joiner_deflate = deflate(spec.joiner) if spec.joiner else b""
    md5 = hashlib.md5(head)
    first = True
    for s in segments:
        if not s.length:
            continue
        if not first and spec.joiner:
            parts.append(joiner_deflate)
            crc = zlib.crc32(spec.joiner, crc)
            length += len(spec.joiner)
        first = False
        parts.append(s.deflate)
        crc = crc32_combine(crc, s.crc, s.length)
        length += s.length
        md5.update(s.etag.encode())
    parts += [deflate(spec.tail), FINAL_BLOCK]
    crc = zlib.crc32(spec.tail, crc)
    length += len(spec.tail)
    md5.update(spec.tail)
    parts.append(struct.pack("<II", crc & 0xFFFFFFFF, length & 0xFFFFFFFF))
    return Assembled(
        spec,
        version,
        tuple(segments),
        time.time(),
        head,
        md5.hexdigest(),
        length,
        tuple(parts),
        sum(len(p) for p in parts),
    )


# -- writing: the deployment's copy --------------------------------------------------------


def _render(spec: Spec, rows: Sequence[tuple]) -> bytes:
    return spec.entries(rows).encode()


def escaped(values: list[str], escape: Callable[[str], str]) -> list[str]:
    """``[escape(v) for v in values]``, escaping them all in one call (600,000 names: a second less)."""
    parts = escape("\x00".join(values)).split("\x00")
    if len(parts) != len(values):  # none, or a value holding NUL: one at a time
        return [escape(v) for v in values]
    return parts


def json_strings(values: list[str]) -> list[str]:
    """``[json.dumps(v) for v in values]`` from one json.dumps of the list: inside a JSON string
    every quote is escaped, so '", "' only ever separates two of them."""
    if not values:
        return []
    import json

    return ['"' + v + '"' for v in json.dumps(values)[2:-2].split('", "')]


def _put(tx: Tx, spec: Spec, lo: str, version: int, rows: Sequence[tuple]) -> None:
    body = _render(spec, rows)
    tx.execute(
        "INSERT INTO stored_segments (page, lo, version, etag, length, crc, entries, deflate) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (page, lo) DO UPDATE SET "
        "version = excluded.version, etag = excluded.etag, length = excluded.length, crc = excluded.crc, "
        "entries = excluded.entries, deflate = excluded.deflate",
        (
            spec.page,
            lo,
            version,
            hashlib.md5(body).hexdigest(),
            len(body),
            zlib.crc32(body),
            len(rows),
            tx.blob(deflate(body)),
        ),
    )


def _build_whole(tx: Tx, spec: Spec, version: int) -> None:
    _build_many(tx, [spec], {spec.page: version})


def _build_many(tx: Tx, specs: Sequence[Spec], versions: dict[str, int]) -> None:
    """Build every page of ``specs`` whole from one read of the projects (the public pages
    filter the same rows): ``SEGMENT_ROWS`` names a segment, the first one at ``lo = ''``."""
    if not specs:
        return
    for spec in specs:
        tx.execute("DELETE FROM stored_segments WHERE page = ?", (spec.page,))
    public = any(spec.public for spec in specs)
    # IN: one hashed subplan for the read (EXISTS per row: 0.8 s more at 600,000 projects).
    sql = "SELECT name, normalized_name, last_serial"
    sql += ", projects.id IN (SELECT project_id FROM private_projects)" if public else ""
    sql += " FROM projects ORDER BY normalized_name"
    pending: dict[str, list[tuple]] = {spec.page: [] for spec in specs}
    written = dict.fromkeys(pending, 0)

    def put(spec: Spec, rows: Sequence[tuple]) -> None:
        _put(tx, spec, rows[0][1] if written[spec.page] else "", versions[spec.page], rows)
        written[spec.page] += 1

    for rows in stream.batches(tx, sql, batch=SEGMENT_ROWS):
        shown = [r for r in rows if not r[3]] if public else rows
        for spec in specs:
            buf = pending[spec.page]
            buf.extend(shown if spec.public else rows)
            while len(buf) >= SEGMENT_ROWS:
                put(spec, buf[:SEGMENT_ROWS])
                del buf[:SEGMENT_ROWS]
    for spec in specs:
        if pending[spec.page] or not written[spec.page]:  # an empty index has its first segment too
            put(spec, pending[spec.page])


def _copy_public(tx: Tx, spec: Spec, version: int) -> None:
    """Build the public page from the segments of the page of every project just built: a copy,
    with the segments that hold private projects rendered again (none, most often)."""
    tx.execute("DELETE FROM stored_segments WHERE page = ?", (spec.page,))
    tx.execute(
        "INSERT INTO stored_segments (page, lo, version, etag, length, crc, entries, deflate) "
        "SELECT ?, lo, version, etag, length, crc, entries, deflate FROM stored_segments WHERE page = ?",
        (spec.page, spec.everything_page),
    )
    private = tx.all(
        "SELECT p.normalized_name FROM private_projects v JOIN projects p ON p.id = v.project_id"
    )
    for lo in sorted({_segment_of(tx, spec.page, r["normalized_name"]) for r in private}):
        _rewrite(tx, spec, lo, version)


def _segment_of(tx: Tx, page: str, name: str) -> str:
    return tx.scalar("SELECT MAX(lo) FROM stored_segments WHERE page = ? AND lo <= ?", (page, name)) or ""


def _rewrite(tx: Tx, spec: Spec, lo: str, version: int) -> None:
    """Render the segment starting at ``lo`` again; split it if it grew, drop it if it emptied."""
    hi = tx.scalar("SELECT MIN(lo) FROM stored_segments WHERE page = ? AND lo > ?", (spec.page, lo))
    sql, params = spec.rows_sql(lo, hi)
    rows = [row for chunk in stream.batches(tx, sql, params) for row in chunk]
    if not rows and lo:
        tx.execute("DELETE FROM stored_segments WHERE page = ? AND lo = ?", (spec.page, lo))
        return
    if len(rows) <= 2 * SEGMENT_ROWS:
        _put(tx, spec, lo, version, rows)
        return
    for start in range(0, len(rows), SEGMENT_ROWS):
        part = rows[start : start + SEGMENT_ROWS]
        _put(tx, spec, lo if start == 0 else part[0][1], version, part)


def _plan(tx: Tx, spec: Spec) -> tuple[int, int | None, set[str] | None]:
    """(the version now, the stored version or None, the names changed since it or None:
    the page is built whole)."""
    version = int(tx.scalar(spec.version_sql) or 0)
    row = tx.one("SELECT version FROM stored_pages WHERE page = ?", (spec.page,))
    stored = int(row["version"]) if row is not None else None
    names: set[str] | None = None
    if stored is not None and stored >= version:
        names = set()
    elif stored is not None and tx.one("SELECT 1 FROM stored_segments WHERE page = ? LIMIT 1", (spec.page,)):
        changed = tx.all(spec.changes_sql + " LIMIT ?", (stored, version, MAX_CHANGES + 1))
        if len(changed) <= MAX_CHANGES:
            names = {canonicalize_name(r["name"]) for r in changed}
    return version, stored, names


def update(tx: Tx, spec: Spec) -> int:
    """Bring the stored page to the version now (inside the caller's write transaction); the version."""
    return update_all(tx, [spec])[spec.page]


def update_all(tx: Tx, specs: Sequence[Spec]) -> dict[str, int]:
    """``update`` of every page of ``specs``; those built whole are built from one read of the
    projects. Page -> its stored version."""
    plans = {spec.page: (spec, *_plan(tx, spec)) for spec in specs}
    done = {
        page: stored
        for page, (_spec, version, stored, _names) in plans.items()
        if stored is not None and stored >= version
    }
    whole = [spec for spec, _v, _s, names in plans.values() if spec.page not in done and names is None]
    rendered = {spec.page for spec in whole if not spec.public}
    copied = {spec.page for spec in whole if spec.public and spec.everything_page in rendered}
    _build_many(tx, [s for s in whole if s.page not in copied], {s.page: plans[s.page][1] for s in whole})
    for page in sorted(copied):
        spec, version, _stored, _names = plans[page]
        _copy_public(tx, spec, version)
    for spec, version, _stored, names in plans.values():
        if spec.page in done:
            continue
        for lo in sorted({_segment_of(tx, spec.page, n) for n in names or ()}):
            _rewrite(tx, spec, lo, version)
        tx.execute(
            "INSERT INTO stored_pages (page, version, etag, body, gzip_body, rendered, size) "
            "VALUES (?, ?, '', ?, ?, ?, 0) ON CONFLICT (page) DO UPDATE SET version = excluded.version, "
            "rendered = excluded.rendered",
            (spec.page, str(version), b"", b"", iso_time(time.time())),
        )
        done[spec.page] = version
    return done


def prepare(db: Database, specs: Sequence[Spec]) -> dict[str, int]:
    """Store every page of ``specs`` at the version now, before any request asks for one
    (``cloudpypi serve`` before its workers start, ``cloudpypi initdb``): the pages never stored
    are built from one read of the projects, the others brought up to date. A process asking
    for one meanwhile waits for it (at most LOCK_WAIT s). Page -> its stored version."""
    with db.transaction(write=True) as tx:
        if tx.dialect == "postgresql":  # in one order: two of these never wait for each other
            for lock in sorted({_lock_id(spec.page) for spec in specs}):
                tx.execute("SELECT pg_advisory_xact_lock(?)", (lock,))
        return update_all(tx, specs)


class Busy(Exception):
    """Another process is building the page and did not finish within LOCK_WAIT seconds."""


# -- reading: what each process holds -------------------------------------------------------


def _lock_id(page: str) -> int:
    return int.from_bytes(hashlib.sha256(("segmented " + page).encode()).digest()[:4], "big", signed=True)


class SegmentedPages:
    """Each process holds the latest assembly of each segmented page; the database keeps the segments."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._held: dict[str, Assembled] = {}
        self._lock = threading.Lock()
        self._updating: dict[str, threading.Lock] = {}

    def held(self, page: str) -> Assembled | None:
        return self._held.get(page)

    def current(self, spec: Spec, version: int, *, max_age: float = 0.0) -> Assembled | None:
        """The page held in this process if it is at ``version`` or newer (or held less than
        ``max_age`` s ago), else None: what ``get`` answers without reading or waiting."""
        held = self._held.get(spec.page)
        if held is not None and (held.version >= version or time.time() - held.loaded < max_age):
            return held
        return None

    def get(self, spec: Spec, version: int, *, max_age: float = 0.0) -> Assembled:
        """The page at ``version`` (just read by the caller) or newer; one held less than
        ``max_age`` s ago is served as it is, and while another process updates the stored
        copy the page held is served rather than waited for. Raises Busy when the process
        holds none and another one's build outlasts LOCK_WAIT: the caller answers from the
        database itself."""
        current = self.current(spec, version, max_age=max_age)
        if current is not None:
            return current
        held = self._held.get(spec.page)
        local = self._local_lock(spec.page)
        # One thread of the process reads (or updates) the page; while one does, the others
        # serve the page held, or wait when there is none (never a copy per thread).
        if not local.acquire(blocking=held is None):
            return held  # type: ignore[return-value]
        try:
            held = self._held.get(spec.page) or held
            if held is not None and held.version >= version:
                return held
            loaded = self._load(spec, held)
            if loaded is not None and loaded.version >= version:
                return self._hold(loaded)
            held = loaded or held
            with self.db.transaction(write=True) as tx:
                if tx.dialect == "postgresql":
                    if held is None:
                        self._wait_for_lock(tx, spec)
                    elif not tx.scalar("SELECT pg_try_advisory_xact_lock(?)", (_lock_id(spec.page),)):
                        return self._hold(held)  # another process updates it: serve what is held
                update(tx, spec)
            loaded = self._load(spec, held)
            return self._hold(loaded) if loaded is not None else held  # type: ignore[arg-type,return-value]
        finally:
            local.release()

    @staticmethod
    def _wait_for_lock(tx: Tx, spec: Spec) -> None:
        """The page's lock, waiting at most LOCK_WAIT s for the process that holds it (Busy)."""
        tx.execute(f"SET LOCAL lock_timeout = {int(LOCK_WAIT * 1000)}")
        try:
            tx.execute("SELECT pg_advisory_xact_lock(?)", (_lock_id(spec.page),))
        except DatabaseError as exc:
            if getattr(exc.__cause__, "pgcode", None) == "55P03":  # lock_not_available
                raise Busy(spec.page) from exc
            raise
        tx.execute("SET LOCAL lock_timeout = 0")

    def _local_lock(self, page: str) -> threading.Lock:
        with self._lock:
            return self._updating.setdefault(page, threading.Lock())

    def _hold(self, value: Assembled) -> Assembled:
        with self._lock:
            held = self._held.get(value.spec.page)
            if held is None or held.version <= value.version:
                self._held[value.spec.page] = value
                return value
            return held

    def _load(self, spec: Spec, held: Assembled | None) -> Assembled | None:
        """The stored page, reading only the segments re-rendered since ``held`` (one statement)."""
        since = held.version if held is not None else -1
        mine = {s.lo: s for s in held.segments} if held is not None else {}
        sql = (
            "SELECT p.version AS page_version, s.lo, s.version, s.etag, s.length, s.crc, "
            "CASE WHEN s.version > ? THEN s.deflate END AS deflate "
            "FROM stored_pages p JOIN stored_segments s ON s.page = p.page WHERE p.page = ? ORDER BY s.lo"
        )
        with self.db.reading() as tx:
            rows = tx.all(sql, (since, spec.page))
        if not rows:
            return None
        version = int(rows[0]["page_version"])
        if held is not None and version == held.version:
            return replace(held, loaded=time.time())  # checked now: max_age counts from here
        segments = []
        for r in rows:
            if r["deflate"] is None:
                old = mine.get(r["lo"])
                if old is None or old.etag != r["etag"]:  # not as held: read everything again
                    return self._load(spec, None) if held is not None else None
                segments.append(old)
                continue
            packed = bytes(r["deflate"])
            body = inflate(packed) if spec.keep_body else b""  # kept: sent identity as it is
            segments.append(
                Segment(r["lo"], int(r["version"]), r["etag"], int(r["length"]), int(r["crc"]), packed, body)
            )
        return assemble(spec, version, segments)
