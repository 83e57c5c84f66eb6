"""Data access for projects, releases and files (every query the views and the upload make)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from packaging.utils import canonicalize_name, canonicalize_version
from packaging.version import InvalidVersion, Version

from pypi.index.db import Tx, utcnow

#: Release metadata columns that hold plain text, and the form fields they come from.
TEXT_FIELDS = (
    "metadata_version",
    "license_expression",
    "summary",
    "description",
    "description_content_type",
    "author",
    "author_email",
    "maintainer",
    "maintainer_email",
    "license",
    "keywords",
    "home_page",
    "download_url",
    "requires_python",
    "platform",
)
#: Columns holding JSON lists.
LIST_FIELDS = ("classifiers", "requires_dist", "provides_extra", "license_files", "dynamic")

FILE_COLUMNS = (
    "f.id, f.filename, f.path, f.size, f.md5_digest, f.sha256_digest, f.blake2_256_digest, "
    "f.packagetype, f.python_version, f.requires_python, f.metadata_sha256, f.upload_time, "
    "f.comment_text, r.version, r.yanked, r.yanked_reason"
)


def get_project(tx: Tx, name: str) -> Any:
    """The project row for ``name`` (any spelling), or None; ``private`` says whether it is
    private (pypi.index.access), so a view needs no second query to know."""
    return tx.lookup(
        "SELECT id, name, normalized_name, created, last_serial, "
        "EXISTS (SELECT 1 FROM private_projects v WHERE v.project_id = projects.id) AS private "
        "FROM projects WHERE normalized_name = ?",
        (canonicalize_name(name),),
    )


def create_project(tx: Tx, name: str) -> Any:
    """Insert a project named ``name`` and return its row."""
    tx.insert(
        "INSERT INTO projects (name, normalized_name, created) VALUES (?, ?, ?)",
        (name, canonicalize_name(name), utcnow()),
    )
    return get_project(tx, name)


def all_projects(tx: Tx) -> list[Any]:
    return tx.all("SELECT name, normalized_name, last_serial FROM projects ORDER BY normalized_name")


def get_release(tx: Tx, project_id: int, version: str) -> Any:
    return tx.one(
        "SELECT * FROM releases WHERE project_id = ? AND canonical_version = ?",
        (project_id, canonical_version(version)),
    )


def canonical_version(version: str) -> str:
    """``1.0.0`` and ``1.0`` are one release, as on pypi.org."""
    return canonicalize_version(version, strip_trailing_zero=True)


def release_values(meta: Mapping[str, Any]) -> dict[str, str]:
    """Release columns from a metadata mapping (text fields and JSON lists)."""
    values = {f: str(meta.get(f) or "") for f in TEXT_FIELDS}
    for f in LIST_FIELDS:
        values[f] = json.dumps(list(meta.get(f) or []))
    values["project_urls"] = json.dumps(dict(meta.get("project_urls") or {}))
    return values


def create_release(tx: Tx, project_id: int, version: str, meta: Mapping[str, Any]) -> Any:
    values = release_values(meta)
    cols = ["project_id", "version", "canonical_version", "created", *values]
    tx.insert(
        f"INSERT INTO releases ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        (project_id, version, canonical_version(version), utcnow(), *values.values()),
    )
    return get_release(tx, project_id, version)


def update_release(tx: Tx, release_id: int, meta: Mapping[str, Any]) -> None:
    values = release_values(meta)
    tx.execute(
        f"UPDATE releases SET {', '.join(c + ' = ?' for c in values)} WHERE id = ?",
        (*values.values(), release_id),
    )


def releases(tx: Tx, project_id: int) -> list[Any]:
    return tx.all("SELECT * FROM releases WHERE project_id = ? ORDER BY id", (project_id,))


def project_files(tx: Tx, project_id: int) -> list[Any]:
    """Every file of the project, with its release's version and yank state, oldest first."""
    return tx.all(
        f"SELECT {FILE_COLUMNS}, f.release_id FROM files f JOIN releases r ON r.id = f.release_id "
        "WHERE r.project_id = ? ORDER BY f.filename",
        (project_id,),
    )


def release_files(tx: Tx, release_id: int) -> list[Any]:
    return tx.all(
        f"SELECT {FILE_COLUMNS} FROM files f JOIN releases r ON r.id = f.release_id "
        "WHERE f.release_id = ? ORDER BY f.filename",
        (release_id,),
    )


def file_by_name(tx: Tx, filename: str) -> Any:
    return tx.one("SELECT * FROM files WHERE filename = ?", (filename,))


def file_by_path(tx: Tx, path: str) -> Any:
    return tx.one("SELECT * FROM files WHERE path = ?", (path,))


def filename_was_used(tx: Tx, filename: str) -> bool:
    """Whether ``filename`` was ever uploaded (even if the file was deleted since)."""
    return tx.one("SELECT 1 FROM file_registry WHERE filename = ?", (filename,)) is not None


def release_has_sdist(tx: Tx, release_id: int) -> bool:
    return (
        tx.one("SELECT 1 FROM files WHERE release_id = ? AND packagetype = 'sdist'", (release_id,))
        is not None
    )


def add_file(tx: Tx, release_id: int, values: Mapping[str, Any]) -> int:
    """Insert the file row and register its filename forever."""
    cols = ["release_id", *values]
    fid = tx.insert(
        f"INSERT INTO files ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        (release_id, *values.values()),
    )
    tx.execute("INSERT INTO file_registry (filename) VALUES (?)", (values["filename"],))
    return fid


def recent_releases(tx: Tx, limit: int = 20) -> list[Any]:
    return tx.all(
        "SELECT p.name, p.normalized_name, r.version, r.summary, r.created FROM releases r "
        "JOIN projects p ON p.id = r.project_id ORDER BY r.id DESC LIMIT ?",
        (limit,),
    )


def search_projects(tx: Tx, query: str, limit: int = 100) -> list[Any]:
    """Projects whose normalized name starts with the normalized query (an index range, not a scan)."""
    needle = canonicalize_name(query).replace("\\", "").replace("%", "").replace("_", "")
    if tx.dialect == "sqlite":  # SQLite's LIKE ignores case, so only a range uses the index
        return tx.all(
            "SELECT name, normalized_name, last_serial FROM projects "
            "WHERE normalized_name >= ? AND normalized_name < ? ORDER BY normalized_name LIMIT ?",
            (needle, needle + "\x7f", limit),
        )
    return tx.all(
        "SELECT name, normalized_name, last_serial FROM projects WHERE normalized_name LIKE ? "
        "ORDER BY normalized_name LIMIT ?",
        (f"{needle}%", limit),
    )


#: Above this many rows (by PostgreSQL's statistics) the home page shows estimates, not COUNT(*).
EXACT_COUNT_LIMIT = 100_000


def project_counts(tx: Tx) -> tuple[int, int, int]:
    """(projects, releases, files) in the index: see index_counts."""
    return index_counts(tx)[:3]  # type: ignore[return-value]


def index_counts(tx: Tx) -> tuple[int, int, int, bool]:
    """(projects, releases, files, estimated).

    On PostgreSQL a table the statistics put above EXACT_COUNT_LIMIT rows is
    counted from ``pg_class.reltuples`` (kept by ANALYZE and autovacuum), not
    by COUNT(*) over millions of rows; ``estimated`` says so.
    """
    tables = ("projects", "releases", "files")
    if tx.dialect == "postgresql":
        rows = tx.all(
            "SELECT relname, reltuples FROM pg_class WHERE relkind = 'r' AND relname IN (?, ?, ?) "
            "AND relnamespace = current_schema()::regnamespace",
            tables,
        )
        guess = {r["relname"]: float(r["reltuples"]) for r in rows}
        if all(guess.get(t, -1) > EXACT_COUNT_LIMIT for t in tables):
            return int(guess["projects"]), int(guess["releases"]), int(guess["files"]), True
    row = tx.one(
        "SELECT (SELECT COUNT(*) FROM projects) AS p, (SELECT COUNT(*) FROM releases) AS r, "
        "(SELECT COUNT(*) FROM files) AS f"
    )
    return int(row["p"]), int(row["r"]), int(row["f"]), False


def _parsed(version: str) -> Version | None:
    try:
        return Version(version)
    except InvalidVersion:
        return None


def version_key(version: str) -> tuple:
    """Sort key for version strings: PEP 440 order, versions it cannot parse first (by text)."""
    parsed = _parsed(version)
    return (0, version) if parsed is None else (1, parsed)


def latest_release(releases: list):
    """pypi.org's choice: the newest stable, unyanked release; else the newest unyanked; else the newest."""

    def newest(rows):
        rows = [r for r in rows if _parsed(r["version"]) is not None]
        return max(rows, key=lambda r: _parsed(r["version"])) if rows else None

    unyanked = [r for r in releases if not r["yanked"]]
    stable = [r for r in unyanked if not _parsed(r["version"]) or not _parsed(r["version"]).is_prerelease]
    return newest(stable) or newest(unyanked) or newest(releases) or (releases[-1] if releases else None)
