"""The XML-RPC answers that run to hundreds of thousands of entries, written from a cursor.

``list_packages``, ``list_packages_with_serial`` and ``changelog_since_serial``
at pypi.org's size are 600,000 names or 50,000 journal rows; building the
Python dict or list first and then ``xmlrpc.client.dumps`` took seconds and
hundreds of MB. These write the same bytes ``dumps(..., methodresponse=True)``
writes, row by row from tuple rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from xmlrpc.client import escape

from pypi.index import segmented, stream
from pypi.index.db import Tx

HEAD = "<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n"
TAIL = "</param>\n</params>\n</methodResponse>\n"
_PROJECTS_SQL = "SELECT name, last_serial FROM projects ORDER BY normalized_name"
_BATCH = 5000


def _joined(parts: Iterator[str]) -> bytes:
    out: list[bytes] = []
    batch: list[str] = []
    for part in parts:
        batch.append(part)
        if len(batch) >= _BATCH:
            out.append("".join(batch).encode("utf-8"))
            batch = []
    out.append("".join(batch).encode("utf-8"))
    return b"".join(out)


def list_packages(tx: Tx) -> bytes:
    def parts() -> Iterator[str]:
        yield HEAD + "<value><array><data>\n"
        for name, _ in stream.rows(tx, _PROJECTS_SQL):
            yield f"<value><string>{escape(name)}</string></value>\n"
        yield "</data></array></value>\n" + TAIL

    return _joined(parts())


def list_packages_with_serial(tx: Tx) -> bytes:
    def parts() -> Iterator[str]:
        yield HEAD + "<value><struct>\n"
        for name, serial in stream.rows(tx, _PROJECTS_SQL):
            yield (
                f"<member>\n<name>{escape(name)}</name>\n<value><int>{int(serial)}</int></value>\n</member>\n"
            )
        yield "</struct></value>\n" + TAIL

    return _joined(parts())


def changelog_since_serial(tx: Tx, serial: int, limit: int = 50000) -> bytes:
    """(name, version, timestamp, action, serial) after ``serial``, oldest first (as journal.since)."""
    from pypi.views.xmlrpc import _timestamp

    def parts() -> Iterator[str]:
        yield HEAD + "<value><array><data>\n"
        for id_, name, version, action, submitted in stream.rows(
            tx,
            "SELECT id, name, version, action, submitted_date FROM journal WHERE id > ? ORDER BY id LIMIT ?",
            (serial, limit),
        ):
            yield (
                f"<value><array><data>\n<value><string>{escape(name)}</string></value>\n"
                f"<value><string>{escape(version or '')}</string></value>\n"
                f"<value><int>{_timestamp(submitted)}</int></value>\n"
                f"<value><string>{escape(action)}</string></value>\n"
                f"<value><int>{int(id_)}</int></value>\n</data></array></value>\n"
            )
        yield "</data></array></value>\n" + TAIL

    return _joined(parts())


#: The methods whose answer is the whole index, kept for the deployment as segments
#: (pypi.index.segmented) and brought up to date at most every MAX_AGE seconds.
SHARED = ("list_packages", "list_packages_with_serial")
MAX_AGE = 1.0


def _name_entries(rows: Sequence[tuple]) -> str:
    names = segmented.escaped([r[0] for r in rows], escape)
    return "".join([f"<value><string>{n}</string></value>\n" for n in names])


def _serial_entries(rows: Sequence[tuple]) -> str:
    names = segmented.escaped([r[0] for r in rows], escape)
    return "".join(
        [
            f"<member>\n<name>{n}</name>\n<value><int>{int(r[2])}</int></value>\n</member>\n"
            for n, r in zip(names, rows, strict=True)
        ]
    )


def _spec(method: str, public: bool) -> segmented.Spec:
    page = f"segmented/xmlrpc/{method}" + (segmented.PUBLIC_SUFFIX if public else "")
    if method == "list_packages":
        head, tail = HEAD + "<value><array><data>\n", "</data></array></value>\n" + TAIL
        return segmented.Spec(page, _name_entries, lambda _v: head.encode(), tail.encode(), public=public)
    head, tail = HEAD + "<value><struct>\n", "</struct></value>\n" + TAIL
    return segmented.Spec(
        page, _serial_entries, lambda _v: head.encode(), tail.encode(), names_only=False, public=public
    )


#: (method, public) -> its segmented page; the public ones list only public projects.
SPECS = {(m, public): _spec(m, public) for m in SHARED for public in (False, True)}

#: method -> writer, for the methods answered from a cursor (the arguments already checked).
WRITERS = {
    "list_packages": list_packages,
    "list_packages_with_serial": list_packages_with_serial,
    "changelog_since_serial": changelog_since_serial,
}
