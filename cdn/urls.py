"""Builds the public URL of every package file and ``.metadata`` object."""

from __future__ import annotations

from urllib.parse import quote

#: Storage paths of package files start with this; the URL keeps the rest.
PACKAGES_PREFIX = "packages/"


class URLBuilder:
    """Storage path -> public URL, from ``[cdn] files_url``.

    With no ``files_url`` the links point at this application's own
    ``/packages/`` (absolute when the application's URL is known, else
    root-relative, which PEP 503 allows).
    """

    def __init__(self, files_url: str = "", app_url: str = "") -> None:
        base = files_url or (app_url.rstrip("/") + "/packages/")
        self.base = base.rstrip("/") + "/"
        self.is_cdn = bool(files_url)

    def file_url(self, path: str) -> str:
        """The URL of the object at storage ``path`` (``packages/ab/cd/.../name.whl``)."""
        rest = path[len(PACKAGES_PREFIX) :] if path.startswith(PACKAGES_PREFIX) else path
        return self.base + quote(rest, safe="/+!~*'()@:")

    def metadata_url(self, path: str) -> str:
        """The URL of a wheel's METADATA stored beside it (PEP 658/714)."""
        return self.file_url(path + ".metadata")
