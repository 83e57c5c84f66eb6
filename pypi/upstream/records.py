"""The database side of mirrored and proxied projects, shared by the mirror and the proxy.

Upstream files become ordinary rows (releases, files, journal entries, purges),
so every view shows them as local ones. A row from upstream carries its
``upstream_url``; a proxied row whose object is not fetched yet has ``stored = 0``.
Rows uploaded here (``upstream_url IS NULL``) are never changed from here.
"""

from __future__ import annotations

import email.utils
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from packaging.metadata import parse_email
from packaging.utils import canonicalize_name

from pypi.index import packages
from pypi.index.changes import record as record_change
from pypi.index.db import Tx, utcnow
from pypi.upload.pipeline import content_path
from pypi.upstream.client import UpstreamFile
from pypi.upstream.filters import version_of

LOCAL, MIRROR, PROXY = "local", "mirror", "proxy"


@dataclass
class StoredFile:
    """A file the mirror downloaded, verified and stored."""

    path: str
    size: int
    md5: str
    blake2_256: str
    metadata_sha256: str | None
    #: Release metadata read from the file's METADATA (empty when none).
    release_meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Changes:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    yanked: list[str] = field(default_factory=list)
    #: Objects of removed files, to delete from storage after commit.
    orphaned: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.yanked)


def origin_of(tx: Tx, normalized: str) -> str | None:
    """The project's origin (local, mirror, proxy), or None when there is no such project."""
    return tx.scalar("SELECT origin FROM projects WHERE normalized_name = ?", (normalized,))


def upstream_files(tx: Tx, project_id: int) -> dict[str, Any]:
    """filename -> row of every file of the project (local ones too)."""
    rows = tx.all(
        "SELECT f.id, f.filename, f.path, f.sha256_digest, f.metadata_sha256, f.upstream_url, f.stored, "
        "f.release_id, r.version FROM files f JOIN releases r ON r.id = f.release_id WHERE r.project_id = ?",
        (project_id,),
    )
    return {r["filename"]: r for r in rows}


def not_stored(tx: Tx, project_id: int) -> set[str]:
    """The paths of the project's proxied files not pulled from upstream yet."""
    rows = tx.all(
        "SELECT f.path FROM files f JOIN releases r ON r.id = f.release_id "
        "WHERE r.project_id = ? AND f.stored = 0",
        (project_id,),
    )
    return {r["path"] for r in rows}


def release_meta_from(metadata: bytes | None, raw: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Release columns read from a METADATA file (pypi.index.packages.release_values' input);
    ``raw``: its fields when already parsed (``parse_email(metadata)[0]``)."""
    if not metadata:
        return {}
    if raw is None:
        raw, _ = parse_email(metadata)
    meta: dict[str, Any] = {k: raw.get(k) for k in packages.TEXT_FIELDS if isinstance(raw.get(k), str)}
    if isinstance(raw.get("keywords"), list):
        meta["keywords"] = ",".join(raw["keywords"])
    if raw.get("platforms"):
        meta["platform"] = ",".join(raw["platforms"])
    for key in packages.LIST_FIELDS:
        meta[key] = list(raw.get(key) or [])
    meta["project_urls"] = dict(raw.get("project_urls") or {})
    return meta


def release_meta_from_json(info: Mapping[str, Any]) -> dict[str, Any]:
    """Release columns from upstream's JSON API ``info`` (pypi.org's names are the columns')."""
    meta: dict[str, Any] = {k: info[k] for k in packages.TEXT_FIELDS if isinstance(info.get(k), str)}
    for key in packages.LIST_FIELDS:
        value = info.get(key)
        meta[key] = [str(v) for v in value] if isinstance(value, list) else []
    urls = info.get("project_urls")
    meta["project_urls"] = {str(k): str(v) for k, v in urls.items()} if isinstance(urls, dict) else {}
    return meta


def lacks_metadata(release: Any) -> bool:
    """Whether a release has none of the metadata a proxied page cannot give (it lists files)."""
    return not (release["summary"] or release["author"] or release["requires_dist"] not in ("", "[]"))


def newest_release(tx: Tx, project_id: int) -> Any:
    """The project's highest-versioned release row, or None."""
    rows = packages.releases(tx, project_id)
    return max(rows, key=lambda r: packages.version_key(r["version"])) if rows else None


def fill_release(tx: Tx, release: Any, meta: Mapping[str, Any]) -> bool:
    """Give a release taken from upstream without metadata (a proxied page lists only files)
    the metadata now known; whether it changed. A release that has some is left alone."""
    if not meta or not lacks_metadata(release):
        return False
    values = dict(meta)
    if not values.get("requires_python"):
        values["requires_python"] = release["requires_python"]
    packages.update_release(tx, release["id"], values)
    return True


def proxy_path(f: UpstreamFile) -> str:
    """Where a proxied file will be stored: content-addressed by upstream's blake2b-256 when
    upstream gives it (as pypi.org's own paths), else by its sha256, in the same layout."""
    return content_path(f.blake2_256 or f.sha256, f.filename)


def apply_page(
    tx: Tx,
    name: str,
    origin: str,
    wanted: list[UpstreamFile],
    stored: Mapping[str, StoredFile],
    *,
    by: str,
    complete: bool = True,
) -> Changes:
    """Bring one project's upstream rows in line with ``wanted``.

    A wanted file is added when it is in ``stored`` (mirror) or, with
    ``origin == PROXY``, as a row not fetched yet. With ``complete``, upstream
    rows no longer wanted are removed. Yanks follow upstream: a release is
    yanked when every one of its upstream files is.
    """
    normalized = canonicalize_name(name)
    changes = Changes()
    project = packages.get_project(tx, normalized)
    new_project = project is None
    if new_project:
        if not wanted:
            return changes
        project = packages.create_project(tx, name)
        tx.execute("UPDATE projects SET origin = ? WHERE id = ?", (origin, project["id"]))
        record_change(tx, project["name"], None, "create", by, new_project=new_project)
    existing = upstream_files(tx, project["id"])
    wanted_names = {f.filename for f in wanted}
    adding = [
        f
        for f in wanted
        if f.filename not in existing
        and version_of(f.filename) is not None
        and (f.filename in stored or origin == PROXY)
    ]
    taken = _names_taken(tx, [f.filename for f in adding])  # by another project's rows
    #: canonical version -> release row, read once (a new project has none yet).
    known = (
        {}
        if new_project or not adding
        else {r["canonical_version"]: r for r in packages.releases(tx, project["id"])}
    )

    for f in adding:
        if f.filename in taken:
            continue
        version = version_of(f.filename)
        assert version is not None
        s = stored.get(f.filename)
        canonical = packages.canonical_version(version)
        release = known.get(canonical)
        if release is None:
            meta = dict(s.release_meta) if s else {}
            meta.setdefault("requires_python", f.requires_python)
            release = known[canonical] = packages.create_release(tx, project["id"], version, meta)
            record_change(tx, project["name"], version, "new release", by, new_project=new_project)
        elif s and s.release_meta and not release["summary"]:
            packages.update_release(tx, release["id"], s.release_meta)
            release = known[canonical] = packages.get_release(tx, project["id"], version)
        _insert_file(tx, release["id"], f, s, origin)
        taken.add(f.filename)  # a name listed twice is added once
        kind = "source" if f.filename.endswith((".tar.gz", ".zip")) else _pyversion(f.filename)
        record_change(
            tx, project["name"], version, f"add {kind} file {f.filename}", by, new_project=new_project
        )
        changes.added.append(f.filename)

    if complete:
        for filename, row in existing.items():
            if row["upstream_url"] is None or filename in wanted_names:
                continue
            tx.execute("DELETE FROM files WHERE id = ?", (row["id"],))
            record_change(
                tx, project["name"], row["version"], f"remove file {filename}", by, new_project=new_project
            )
            changes.removed.append(filename)
            if row["stored"]:
                changes.orphaned.append(row["path"])
                if row["metadata_sha256"]:
                    changes.orphaned.append(row["path"] + ".metadata")
        if changes.removed:
            tx.execute(
                "DELETE FROM releases WHERE project_id = ? AND NOT EXISTS "
                "(SELECT 1 FROM files f WHERE f.release_id = releases.id)",
                (project["id"],),
            )

    by_version: dict[str, list[UpstreamFile]] = {}
    for f in wanted:
        v = version_of(f.filename)
        if v is not None:
            by_version.setdefault(packages.canonical_version(v), []).append(f)
    for release in packages.releases(tx, project["id"]):
        files = by_version.get(release["canonical_version"])
        if not files:
            continue
        yanked = all(f.yanked is not False for f in files)
        reason = next((f.yanked for f in files if isinstance(f.yanked, str) and f.yanked), "")
        if bool(release["yanked"]) != yanked or (yanked and release["yanked_reason"] != reason):
            tx.execute(
                "UPDATE releases SET yanked = ?, yanked_reason = ? WHERE id = ?",
                (1 if yanked else 0, reason if yanked else "", release["id"]),
            )
            action = "yank release" if yanked else "unyank release"
            record_change(tx, project["name"], release["version"], action, by, new_project=new_project)
            changes.yanked.append(release["version"])

    return changes


def remove_project(tx: Tx, normalized: str, *, by: str) -> list[str]:
    """Remove a project upstream no longer has (only one that came from upstream); its stored objects."""
    project = packages.get_project(tx, normalized)
    if project is None or origin_of(tx, normalized) == LOCAL:
        return []
    if tx.one(
        "SELECT 1 FROM files f JOIN releases r ON r.id = f.release_id "
        "WHERE r.project_id = ? AND f.upstream_url IS NULL",
        (project["id"],),
    ):
        return []  # files were uploaded here (an allowed name): never removed from upstream's side
    rows = tx.all(
        "SELECT f.path, f.metadata_sha256, f.stored FROM files f JOIN releases r ON r.id = f.release_id "
        "WHERE r.project_id = ?",
        (project["id"],),
    )
    tx.execute("DELETE FROM projects WHERE id = ?", (project["id"],))
    record_change(tx, project["name"], None, "remove project", by, new_project=True)
    paths = []
    for r in rows:
        if r["stored"]:
            paths.append(r["path"])
            if r["metadata_sha256"]:
                paths.append(r["path"] + ".metadata")
    return paths


def _pyversion(filename: str) -> str:
    parts = filename[: -len(".whl")].split("-")
    return parts[-3] if len(parts) >= 5 else "py3"


def _upload_time(text: str) -> str:
    if not text:
        return utcnow()
    try:
        return email.utils.parsedate_to_datetime(text).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (TypeError, ValueError):
        return text if text.endswith("Z") else text + "Z"


def _insert_file(tx: Tx, release_id: int, f: UpstreamFile, s: StoredFile | None, origin: str) -> None:
    sdist = f.filename.endswith((".tar.gz", ".zip"))
    values = {
        "release_id": release_id,
        "filename": f.filename,
        "path": s.path if s else proxy_path(f),
        "size": s.size if s else int(f.size or 0),
        "md5_digest": s.md5 if s else "",
        "sha256_digest": f.sha256,
        "blake2_256_digest": s.blake2_256 if s else f.blake2_256,
        "packagetype": "sdist" if sdist else "bdist_wheel",
        "python_version": "source" if sdist else _pyversion(f.filename),
        "requires_python": f.requires_python,
        "metadata_sha256": s.metadata_sha256 if s else (f.metadata_sha256 or None),
        "upload_time": _upload_time(f.upload_time),
        "uploaded_via": f"cloudpypi-{origin}",
        "upstream_url": f.url,
        "upstream_metadata_url": f.url + ".metadata" if f.metadata_sha256 else None,
        "stored": 1 if s else 0,
    }
    cols = list(values)
    tx.execute(
        f"INSERT INTO files ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        tuple(values.values()),
    )
    tx.execute(
        "INSERT INTO file_registry (filename) VALUES (?) ON CONFLICT (filename) DO NOTHING", (f.filename,)
    )


def _names_taken(tx: Tx, filenames: list[str]) -> set[str]:
    """Those of ``filenames`` that files rows already have (one query per 500 names)."""
    taken: set[str] = set()
    for i in range(0, len(filenames), 500):
        chunk = filenames[i : i + 500]
        rows = tx.all(f"SELECT filename FROM files WHERE filename IN ({', '.join('?' * len(chunk))})", chunk)
        taken.update(r["filename"] for r in rows)
    return taken


def page_digest(files: list[UpstreamFile]) -> str:
    """What a page's wanted files say, to skip work when nothing changed."""
    text = "\n".join(f"{f.filename} {f.sha256} {f.yanked!r} {f.requires_python}" for f in files)
    return hashlib.sha256(text.encode()).hexdigest()
