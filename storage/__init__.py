"""Storage backends for package files, behind one interface (see ``storage.base``).

``from_config`` turns ``[storage] backend = NAME`` into a ready backend: the
built-in names, or any backend a plugin registers in the entry-point group
``cloudpypi.storage``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points

from storage.base import (
    InvalidPath,
    NotFound,
    ObjectInfo,
    Storage,
    StorageError,
    StorageMisconfigured,
    StorageUnavailable,
    Temporary,
)

__all__ = [
    "InvalidPath",
    "NotFound",
    "ObjectInfo",
    "Storage",
    "StorageError",
    "StorageMisconfigured",
    "StorageUnavailable",
    "Temporary",
    "backend_class",
    "from_config",
    "known_backends",
]

#: name -> (module, class, the pip extra that brings its libraries)
BUILTIN = {
    "local": ("storage.local", "LocalStorage", None),
    "s3": ("storage.s3", "S3Storage", "s3"),
    "swift": ("storage.swift", "SwiftStorage", "swift"),
}

GROUP = "cloudpypi.storage"


def known_backends() -> list[str]:
    """Every backend name that ``[storage] backend`` accepts here."""
    names = set(BUILTIN)
    names.update(ep.name for ep in entry_points(group=GROUP))
    return sorted(names)


def backend_class(name: str) -> type[Storage]:
    """The class behind a backend name; StorageMisconfigured for an unknown name or missing library."""
    if name in BUILTIN:
        module_name, class_name, extra = BUILTIN[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = f" (pip install 'cloudpypi[{extra}]')" if extra else ""
            raise StorageMisconfigured(
                f"[storage] backend = {name} needs a library that is not installed: {exc.name}{hint}",
                key="backend",
            ) from None
        return getattr(module, class_name)
    for ep in entry_points(group=GROUP):
        if ep.name == name:
            try:
                cls = ep.load()
            except ImportError as exc:
                raise StorageMisconfigured(
                    f"[storage] backend = {name}: the plugin {ep.value} cannot be imported: {exc}",
                    key="backend",
                ) from None
            if not (isinstance(cls, type) and issubclass(cls, Storage)):
                raise StorageMisconfigured(
                    f"[storage] backend = {name}: {ep.value} is not a storage.base.Storage subclass",
                    key="backend",
                )
            return cls
    raise StorageMisconfigured(
        f"[storage] backend = {name!r} is unknown; known backends: {', '.join(known_backends())}",
        key="backend",
    )


def from_config(settings: Mapping[str, str], *, data_dir: str) -> Storage:
    """Build the backend named by ``settings['backend']`` (default ``local``)."""
    name = (settings.get("backend") or "local").strip()
    return backend_class(name).from_config(settings, data_dir=data_dir)
