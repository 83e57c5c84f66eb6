"""The one loader for CloudPyPI's plugins: a short name -> a class, from the built-ins or an
entry point in a versioned group.

Groups carry the version of the interface they promise, as bandersnatch's do
(``cloudpypi.storage.v1``, ``cloudpypi.purgers.v1``): a plugin written for an
older interface is not loaded as if it spoke the new one. The unversioned
groups of earlier releases are still read, with a deprecation warning in the
log. ``storage`` and ``cdn`` each call ``load_class`` with their own
built-in table, base class and error; neither imports the other.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points

log = logging.getLogger(__name__)

#: name -> (module, class, the pip requirement that brings its libraries, or None)
Builtins = Mapping[str, tuple[str, str, "str | None"]]


def _entry_points(group: str, legacy_group: str | None) -> list[tuple[EntryPoint, bool]]:
    """Entry points of ``group`` first, then those of ``legacy_group`` (flagged True)."""
    found = [(ep, False) for ep in entry_points(group=group)]
    if legacy_group:
        found += [(ep, True) for ep in entry_points(group=legacy_group)]
    return found


def known_names(builtins: Builtins, group: str, legacy_group: str | None = None) -> list[str]:
    """The built-in names and every plugin name installed in either group, sorted."""
    return sorted(set(builtins) | {ep.name for ep, _ in _entry_points(group, legacy_group)})


def load_class(
    name: str,
    *,
    builtins: Builtins,
    group: str,
    base: type,
    error: Callable[[str], Exception],
    setting: str,
    plural: str,
    legacy_group: str | None = None,
) -> type:
    """The class behind ``name``: a built-in, or an entry point of ``group`` (then ``legacy_group``).

    ``setting`` (``[storage] backend``) starts every message, ``plural``
    (``backends``) names the kind in "known backends: ..."; ``error(message)``
    builds the exception for an unknown name, a missing library, a plugin that
    cannot be imported, or one that is not a subclass of ``base``.
    """
    what = f"{setting} = {name}"
    if name in builtins:
        module_name, class_name, requirement = builtins[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = f" (pip install '{requirement}')" if requirement else ""
            raise error(f"{what} needs a library that is not installed: {exc.name}{hint}") from None
        return getattr(module, class_name)
    for ep, legacy in _entry_points(group, legacy_group):
        if ep.name != name:
            continue
        if legacy:
            log.warning(
                "%s: the plugin %s is registered in the entry-point group %r, which is deprecated;"
                " register it in %r",
                what,
                ep.value,
                legacy_group,
                group,
            )
        try:
            cls = ep.load()
        except ImportError as exc:
            raise error(
                f"{what}: the plugin {ep.value} cannot be imported: {exc} "
                "(pip install the package that provides it)"
            ) from None
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise error(f"{what}: {ep.value} is not a {base.__module__}.{base.__qualname__} subclass")
        return cls
    known = ", ".join(known_names(builtins, group, legacy_group))
    raise error(f"{setting} = {name!r} is unknown; known {plural}: {known}")
