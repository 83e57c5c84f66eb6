"""Builds the public URL of every package file and ``.metadata`` object.

Pure path -> URL: the caller (``pypi/``) says which path prefix its objects
live under; nothing here knows of storage or of the index.
"""

from __future__ import annotations

from urllib.parse import quote


class URLBuilder:
    """Storage path -> public URL, from ``[cdn] files_url``.

    With no ``files_url`` the links point at this application's own
    ``/packages/`` (absolute when the application's URL is known, else
    root-relative, which PEP 503 allows). ``prefix`` is the storage prefix of
    every object (``packages/``): the URL keeps the rest of the path.
    """

    def __init__(self, files_url: str = "", app_url: str = "", *, prefix: str = "packages/") -> None:
        base = files_url or (app_url.rstrip("/") + "/packages/")
        self.base = base.rstrip("/") + "/"
        self.prefix = prefix

    def file_url(self, path: str) -> str:
        """The URL of the object at storage ``path`` (``packages/ab/cd/.../name.whl``)."""
        rest = path[len(self.prefix) :] if path.startswith(self.prefix) else path
        return self.base + quote(rest, safe="/+!~*'()@:")
