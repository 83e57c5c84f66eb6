"""The surrogate keys and URL paths that name what a cached response shows.

Views tag responses with these keys; every change queues the same keys (and,
for CDNs that purge by path, the paths) in the purge outbox.
"""

from __future__ import annotations

#: The list of every project: /simple/ (and XML-RPC list views).
INDEX_KEY = "index"
#: Pages that list recent uploads: the home page.
RECENT_KEY = "recent"


def project_key(normalized_name: str) -> str:
    """The key of everything that shows one project."""
    return f"project/{normalized_name}"


def project_paths(normalized_name: str) -> list[str]:
    """The URL paths that show one project (for purgers that work by path)."""
    n = normalized_name
    return [f"/simple/{n}/", f"/pypi/{n}/json", f"/pypi/{n}/*", f"/project/{n}/*"]


def change_purges(normalized_name: str, *, new_project: bool = False) -> dict[str, list[str]]:
    """key -> paths to purge after a change to project ``normalized_name``.

    The index-wide keys are included for a new project (it must appear in
    /simple/ at once) and always for the home page's recent list.
    """
    purges = {project_key(normalized_name): project_paths(normalized_name), RECENT_KEY: ["/"]}
    if new_project:
        purges[INDEX_KEY] = ["/simple/"]
    return purges


def key_paths(key: str) -> list[str]:
    """The URL paths a key covers (for purging by hand through a path-based CDN); [] if unknown."""
    if key == INDEX_KEY:
        return ["/simple/"]
    if key == RECENT_KEY:
        return ["/"]
    if key.startswith("project/"):
        return project_paths(key[len("project/") :])
    return []
