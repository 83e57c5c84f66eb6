"""Every whole-index page the views serve from segments (pypi.index.segmented), and storing
them all before the first request asks for one.

``cloudpypi serve`` calls ``prepare`` before its workers start and ``cloudpypi initdb``
after migrating, so no client request pays for building a page of every project: on a
database where they were never stored (a new deployment, the upgrade adding them) the
pages are built once, from one read of the projects; later starts only apply the changes
since (milliseconds).
"""

from __future__ import annotations

import logging
import time

from pypi.index import segmented
from pypi.index.db import Database
from pypi.views import simple, xmlrpc_lists

log = logging.getLogger("cloudpypi")

#: /simple/ (HTML, JSON) and XML-RPC list_packages(_with_serial), each for every project
#: and for the public ones.
SPECS: tuple[segmented.Spec, ...] = (*simple.SPECS.values(), *xmlrpc_lists.SPECS.values())


def stored(db: Database) -> bool:
    """Whether every whole-index page is stored (then ``prepare`` only applies changes)."""
    with db.reading() as tx:
        found = tx.scalar(
            "SELECT COUNT(*) FROM stored_pages WHERE page IN (" + ", ".join("?" * len(SPECS)) + ")",
            [spec.page for spec in SPECS],
        )
    return int(found or 0) == len(SPECS)


def prepare(db: Database) -> float:
    """Store every whole-index page at the version now; the seconds it took (logged)."""
    first = not stored(db)
    if first:
        log.info("building the whole-index pages (/simple/, XML-RPC lists): once per deployment")
    started = time.perf_counter()
    segmented.prepare(db, SPECS)
    took = time.perf_counter() - started
    if first:
        log.info("whole-index pages built in %.1f s", took)
    return took
