"""Storage backends for package files, behind one interface (see ``storage.base``).

``from_config`` turns ``[storage] backend = NAME`` into a ready backend: the
built-in names, or any backend a plugin registers in the entry-point group
``cloudpypi.storage.v1`` (the unversioned ``cloudpypi.storage`` is still read).
"""

from __future__ import annotations

from collections.abc import Mapping

from cloudpypi_base import plugins
from storage.base import (
    InvalidPath,
    NotFound,
    ObjectHeaders,
    ObjectInfo,
    RangeNotSatisfiable,
    Storage,
    StorageError,
    StorageMisconfigured,
    StorageUnavailable,
    Temporary,
    Upload,
)

__all__ = [
    "InvalidPath",
    "NotFound",
    "ObjectHeaders",
    "ObjectInfo",
    "RangeNotSatisfiable",
    "Storage",
    "StorageError",
    "StorageMisconfigured",
    "StorageUnavailable",
    "Temporary",
    "Upload",
    "backend_class",
    "from_config",
    "known_backends",
]

#: name -> (module, class, the pip requirement that brings its libraries)
BUILTIN = {
    "local": ("storage.local", "LocalStorage", None),
    "s3": ("storage.s3", "S3Storage", "cloudpypi[s3]"),
    "swift": ("storage.swift", "SwiftStorage", "cloudpypi[swift]"),
}

#: The entry-point group plugins register backends in; ``v1`` is this Storage
#: interface (public methods check paths, backends implement ``_put``, ``_open``, ...).
GROUP = "cloudpypi.storage.v1"
#: The unversioned group of earlier releases: still read, with a deprecation warning.
LEGACY_GROUP = "cloudpypi.storage"


def known_backends() -> list[str]:
    """Every backend name that ``[storage] backend`` accepts here."""
    return plugins.known_names(BUILTIN, GROUP, LEGACY_GROUP)


def backend_class(name: str) -> type[Storage]:
    """The class behind a backend name; StorageMisconfigured for an unknown name or missing library."""
    return plugins.load_class(
        name,
        builtins=BUILTIN,
        group=GROUP,
        legacy_group=LEGACY_GROUP,
        base=Storage,
        error=lambda message: StorageMisconfigured(message, key="backend"),
        setting="[storage] backend",
        plural="backends",
    )


def from_config(settings: Mapping[str, str], *, data_dir: str) -> Storage:
    """Build the backend named by ``settings['backend']`` (default ``local``)."""
    name = (settings.get("backend") or "local").strip()
    return backend_class(name).from_config(settings, data_dir=data_dir)
