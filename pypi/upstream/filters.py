"""Which upstream projects and files are taken: as bandersnatch's filters.

Names: the ``projects`` allowlist (names or globs; empty = all) and ``exclude``.
Files: prereleases, wheel platform tags (globs), the newest N releases, a size cap.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from packaging.utils import (
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import Version

from pypi.upstream.client import UpstreamFile, name_and_version


def _matches(name: str, patterns: Iterable[str]) -> bool:
    n = canonicalize_name(name)
    return any(
        fnmatch.fnmatchcase(n, canonicalize_name(p) if "*" not in p and "?" not in p else p.lower())
        for p in patterns
    )


def version_of(filename: str) -> str | None:
    """The version a distribution's file name carries, or None when it cannot be parsed."""
    parsed = name_and_version(filename)
    return parsed[1] if parsed else None


@dataclass(frozen=True)
class Filters:
    projects: Sequence[str] = ()
    exclude: Sequence[str] = ()
    prereleases: bool = True
    platforms: Sequence[str] = ()
    latest: int = 0
    max_file_size: int = 0

    @classmethod
    def from_settings(cls, settings) -> Filters:
        return cls(
            projects=settings.projects,
            exclude=settings.exclude,
            prereleases=settings.prereleases,
            platforms=settings.platforms,
            latest=settings.latest,
            max_file_size=settings.max_file_size,
        )

    def wants_project(self, name: str) -> bool:
        if self.exclude and _matches(name, self.exclude):
            return False
        return not self.projects or _matches(name, self.projects)

    def files(self, files: Sequence[UpstreamFile]) -> list[UpstreamFile]:
        """The files to take, in upstream's order."""
        kept = []
        for f in files:
            version = version_of(f.filename)
            if version is None:
                continue
            if not self.prereleases and Version(version).is_prerelease:
                continue
            if self.max_file_size and f.size is not None and f.size > self.max_file_size:
                continue
            if self.platforms and f.filename.endswith(".whl"):
                tags = parse_wheel_filename(f.filename)[3]
                if not any(fnmatch.fnmatchcase(t.platform, p) for t in tags for p in self.platforms):
                    continue
            kept.append(f)
        if self.latest:
            versions = sorted({Version(version_of(f.filename) or "0") for f in kept}, reverse=True)
            newest = set(versions[: self.latest])
            kept = [f for f in kept if Version(version_of(f.filename) or "0") in newest]
        return kept
