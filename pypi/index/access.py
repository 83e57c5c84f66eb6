"""Who may read what: ``[access] read``, project visibility and the reader role.

A private project is readable by its owners, maintainers and readers only; for
everyone else it does not exist (the views answer the same 404 as for an
unknown name and leave it out of every list). Under ``read = authenticated``
every read needs valid credentials (the views answer 401 before this is asked).
Token scopes (pypi.index.tokens) narrow what a user may read further.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from packaging.utils import canonicalize_name

from pypi.index import changes, tokens
from pypi.index.auth import User
from pypi.index.db import Tx

PUBLIC = "public"
AUTHENTICATED = "authenticated"
READ_MODES = (PUBLIC, AUTHENTICATED)
#: Visibility.shared: the lists shared by every viewer who sees every project, or every public one.
EVERYTHING = "everything"
PUBLIC_ONLY = "public-only"


class Denied(Exception):
    """A read refused with a status other than "does not exist" (403: a token's scope)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def is_private(tx: Tx, project: Any) -> bool:
    """Whether the project (a row of packages.get_project, which carries ``private``, or any
    row with its ``id``) is private."""
    if "private" in project.keys():
        return bool(project["private"])
    return tx.one("SELECT 1 FROM private_projects WHERE project_id = ?", (project["id"],)) is not None


def any_private(tx: Tx) -> bool:
    return tx.one("SELECT 1 FROM private_projects LIMIT 1") is not None


def private_names(tx: Tx) -> dict[str, int]:
    """normalized name -> id of every private project (a small set)."""
    rows = tx.all(
        "SELECT p.id, p.normalized_name FROM private_projects v JOIN projects p ON p.id = v.project_id"
    )
    return {r["normalized_name"]: int(r["id"]) for r in rows}


def _has_role(tx: Tx, project_id: int, user: User) -> bool:
    return (
        tx.one("SELECT 1 FROM roles WHERE project_id = ? AND user_id = ?", (project_id, user.id)) is not None
    )


def can_read(tx: Tx, user: User | None, project: Any, mode: str = PUBLIC) -> bool:
    """Whether ``user`` (None: anonymous) may read ``project`` (a projects row).

    False means "answer as if it did not exist". Raises Denied (403) when the user
    may see the project but the token's scopes do not allow reading it.
    """
    name = project["normalized_name"]
    private = is_private(tx, project)
    if user is None:
        return not private and mode == PUBLIC
    if private and not _has_role(tx, project["id"], user):
        return False
    if tokens.allows(user, "read", name):
        return True
    if not private and mode == PUBLIC:
        return True  # anyone may read it: the token's scopes narrow nothing here
    raise Denied(
        403,
        f"Forbidden: this API token ({tokens.describe(user)}) does not allow reading project {name!r}",
    )


@dataclass(frozen=True)
class Visibility:
    """Which projects one viewer's lists show: all but ``hidden``, and only ``only`` if set."""

    hidden: frozenset[str] = frozenset()
    only: frozenset[str] | None = None
    #: Whether ``hidden`` is exactly the private projects (then the lists are the public ones).
    hides_all_private: bool = False

    def shows(self, name: str) -> bool:
        n = canonicalize_name(name)
        return n not in self.hidden and (self.only is None or n in self.only)

    def filter(self, rows: Iterable[Any], column: str = "normalized_name") -> list[Any]:
        if not self.hidden and self.only is None:
            return list(rows)
        return [r for r in rows if self.shows(r[column])]

    @property
    def everything(self) -> bool:
        """Whether this viewer's lists show every project (then pages shared by all such
        viewers serve them)."""
        return not self.hidden and self.only is None

    @property
    def shared(self) -> str | None:
        """Which of the lists kept for the whole deployment this viewer's are: EVERYTHING,
        PUBLIC_ONLY (every public project, as anonymous readers see), or None (their own)."""
        if self.everything:
            return EVERYTHING
        if self.only is None and self.hides_all_private:
            return PUBLIC_ONLY
        return None

    @property
    def key(self) -> tuple:
        """For the render cache: two viewers with the same key see the same lists."""
        return (tuple(sorted(self.hidden)), None if self.only is None else tuple(sorted(self.only)))


def visibility(tx: Tx, user: User | None, mode: str = PUBLIC) -> Visibility:
    """What ``user``'s lists (simple index, search, home page, XML-RPC, changelog) may show."""
    private = private_names(tx)
    if user is None:
        return Visibility(frozenset(private), hides_all_private=True)
    hidden = set(private)
    if private:
        rows = tx.all(
            "SELECT r.project_id FROM roles r JOIN private_projects v ON v.project_id = r.project_id "
            "WHERE r.user_id = ?",
            (user.id,),
        )
        mine = {int(r["project_id"]) for r in rows}
        hidden = {n for n, pid in private.items() if pid not in mine}
    limit = tokens.scoped_projects(user, "read")
    if limit is not None and mode == PUBLIC:
        # Public projects stay visible; private ones only within the token's scope.
        hidden |= {n for n in private if n not in limit}
        limit = None
    if limit is None:
        return Visibility(frozenset(hidden), hides_all_private=len(hidden) == len(private))
    return Visibility(frozenset(hidden), frozenset(limit))


def set_visibility(tx: Tx, project: Any, private: bool, by: str | None = None) -> bool:
    """Make the project private or public; False if it already was.

    The change is journaled (its serial moves, so every cached page keyed by
    serial is stale) and the project's and the index's pages are purged.
    """
    if is_private(tx, project) == private:
        return False
    if private:
        tx.execute("INSERT INTO private_projects (project_id) VALUES (?)", (project["id"],))
    else:
        tx.execute("DELETE FROM private_projects WHERE project_id = ?", (project["id"],))
    action = "visibility private" if private else "visibility public"
    changes.record(tx, project["name"], None, action, by, new_project=True)
    return True


class PrivateFiles:
    """The stored paths of private projects' files -> their project, held per serial.

    A download asks only whether its path is one of them (one read of the serial, the
    set read again only after a change), instead of looking its file up every time.
    """

    def __init__(self) -> None:
        self._serial = -1
        self._paths: dict[str, Any] = {}
        self._lock = threading.Lock()

    def project_of(self, tx: Tx, path: str) -> Any:
        """The private project (id, name, normalized_name, private) the file at ``path`` (or
        its .metadata) belongs to, or None: a public project's file or no file at all."""
        from pypi.index import journal

        serial = journal.last_serial(tx)
        if serial != self._serial:
            rows = tx.all(
                "SELECT f.path, p.id, p.name, p.normalized_name FROM private_projects v "
                "JOIN projects p ON p.id = v.project_id JOIN releases r ON r.project_id = p.id "
                "JOIN files f ON f.release_id = r.id"
            )
            paths = {
                r["path"]: {
                    "id": r["id"],
                    "name": r["name"],
                    "normalized_name": r["normalized_name"],
                    "private": 1,
                }
                for r in rows
            }
            with self._lock:
                if serial >= self._serial:
                    self._serial, self._paths = serial, paths
        if path.endswith(".metadata"):
            path = path[: -len(".metadata")]
        return self._paths.get(path)


def file_project(tx: Tx, path: str) -> Any:
    """The project (id, name, normalized_name) a stored file or its .metadata belongs to, or None."""
    if path.endswith(".metadata"):
        path = path[: -len(".metadata")]
    return tx.one(
        "SELECT p.id, p.name, p.normalized_name FROM files f JOIN releases r ON r.id = f.release_id "
        "JOIN projects p ON p.id = r.project_id WHERE f.path = ?",
        (path,),
    )


def counts(tx: Tx, vis: Visibility, totals: tuple[int, int, int, bool]) -> tuple[int, int, int, bool]:
    """(projects, releases, files, estimated) that ``vis`` shows, given the index's ``totals``
    (packages.index_counts). Only the few projects ``vis`` names are counted (the hidden ones,
    subtracted from the totals, or the ones a token limits the viewer to), never every project."""
    if vis.everything:
        return totals
    if vis.only is not None:
        return (*_counts_of(tx, vis.only - vis.hidden), False)
    hidden = _counts_of(tx, vis.hidden)
    return (*(max(0, total - n) for total, n in zip(totals[:3], hidden, strict=True)), totals[3])


def _counts_of(tx: Tx, names: frozenset[str]) -> tuple[int, int, int]:
    """(projects, releases, files) of the projects with these normalized names."""
    if not names:
        return (0, 0, 0)
    marks = ", ".join("?" for _ in names)
    row = tx.one(
        "SELECT COUNT(DISTINCT p.id) AS p, COUNT(DISTINCT r.id) AS r, COUNT(f.id) AS f "
        "FROM projects p LEFT JOIN releases r ON r.project_id = p.id "
        f"LEFT JOIN files f ON f.release_id = r.id WHERE p.normalized_name IN ({marks})",
        sorted(names),
    )
    return (int(row["p"]), int(row["r"]), int(row["f"]))
