"""The purger contract, the null purger, and the factory that picks one from ``[cdn] purge``.

A purger tells a CDN to forget what it cached. It knows surrogate keys
(``project/<name>``, ``index``, ...) and the URL paths those keys cover, and
nothing of the application or its database: the outbox worker in ``pypi/``
decides when to call it and retries when it fails.

Built-in purgers: ``none`` (here), ``fastly``, ``cloudfront`` and ``varnish``
(in ``cdn.purgers``); plugins register more in the entry-point group
``cloudpypi.purgers``.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points

GROUP = "cloudpypi.purgers"

#: name -> (module, class, what to pip install for its libraries)
BUILTIN = {
    "none": ("cdn.purge", "NullPurger", None),
    "fastly": ("cdn.purgers.fastly", "FastlyPurger", None),
    "cloudfront": ("cdn.purgers.cloudfront", "CloudFrontPurger", "cloudpypi[s3]"),
    "varnish": ("cdn.purgers.varnish", "VarnishPurger", None),
}


class PurgeError(Exception):
    """A purge was not confirmed by the CDN; the caller retries later.

    The message says what failed (node, status, a short reason) and never
    contains a credential.
    """


class PurgerMisconfigured(ValueError):
    """``[cdn]`` names an unknown purger, a missing library, or lacks a required key."""


class Purger(ABC):
    """Makes a CDN drop what it cached under some surrogate keys or URL paths.

    Implementations take ready values in their constructor; ``from_config``
    is the one place that knows their ``[cdn]`` setting names.
    """

    #: The name ``[cdn] purge`` uses for this purger.
    name = "base"

    @classmethod
    @abstractmethod
    def from_config(cls, settings: Mapping[str, str]) -> Purger:
        """Build from the ``[cdn]`` section; PurgerMisconfigured names a missing or bad key."""

    @abstractmethod
    def purge(self, keys: Sequence[str], paths: Sequence[str]) -> None:
        """Purge everything tagged with any of ``keys`` (or, for path-based CDNs, under ``paths``).

        Returns once the CDN has accepted the purge; raises PurgeError
        otherwise. Purging is idempotent: calling again with the same
        arguments is always safe, so a purge that failed half-way is simply
        repeated. A purger uses whichever of keys or paths its CDN
        understands and ignores the other.
        """

    def describe(self) -> str:
        """One line for logs and ``cloudpypi purge --status`` (no secrets)."""
        return self.name

    def close(self) -> None:  # noqa: B027 - most purgers hold nothing to release
        """Release connections or clients; the purger is not used afterwards."""


class NullPurger(Purger):
    """No CDN: every purge succeeds at once (the default)."""

    name = "none"

    @classmethod
    def from_config(cls, settings: Mapping[str, str]) -> NullPurger:
        return cls()

    def purge(self, keys: Sequence[str], paths: Sequence[str]) -> None:
        return None


def known_purgers() -> list[str]:
    """Every name ``[cdn] purge`` accepts here: the built-ins and installed plugins."""
    return sorted(set(BUILTIN) | {ep.name for ep in entry_points(group=GROUP)})


def purger_class(name: str) -> type[Purger]:
    """The class behind a purger name; PurgerMisconfigured for an unknown name or a missing library."""
    if name in BUILTIN:
        module_name, class_name, package = BUILTIN[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = f" (pip install '{package}')" if package else ""
            raise PurgerMisconfigured(
                f"[cdn] purge = {name} needs a library that is not installed: {exc.name}{hint}"
            ) from None
        return getattr(module, class_name)
    for ep in entry_points(group=GROUP):
        if ep.name == name:
            try:
                cls = ep.load()
            except ImportError as exc:
                raise PurgerMisconfigured(
                    f"[cdn] purge = {name}: the plugin {ep.value} cannot be imported: {exc} "
                    f"(pip install the package that provides it)"
                ) from None
            if not (isinstance(cls, type) and issubclass(cls, Purger)):
                raise PurgerMisconfigured(f"[cdn] purge = {name}: {ep.value} is not a cdn.purge.Purger")
            return cls
    raise PurgerMisconfigured(
        f"[cdn] purge = {name!r} is unknown; known purgers: {', '.join(known_purgers())}"
    )


def from_config(settings: Mapping[str, str]) -> Purger:
    """The purger named by ``settings['purge']`` (default ``none``), built from the same section."""
    name = (settings.get("purge") or "none").strip()
    return purger_class(name).from_config(settings)


def setting(settings: Mapping[str, str], key: str, default: str = "") -> str:
    """``settings[key]`` stripped, or ``default`` when absent or empty."""
    return (settings.get(key) or "").strip() or default


def flag(settings: Mapping[str, str], key: str, default: bool) -> bool:
    """A yes/no setting: true/false, yes/no, on/off, 1/0."""
    value = setting(settings, key).lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise PurgerMisconfigured(f"[cdn] {key}: {value!r} is not true or false")


def seconds(settings: Mapping[str, str], key: str, default: float) -> float:
    """A positive number of seconds."""
    value = setting(settings, key)
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise PurgerMisconfigured(f"[cdn] {key}: {value!r} is not a number of seconds") from None
    if number <= 0:
        raise PurgerMisconfigured(f"[cdn] {key}: must be more than 0")
    return number
