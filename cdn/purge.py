"""The purger contract, the null purger, and the factory that picks one from ``[cdn] purge``.

A purger tells a CDN to forget what it cached. It knows surrogate keys
(``project/<name>``, ``index``, ...) and the URL paths those keys cover, and
nothing of the application or its database: the outbox worker in ``pypi/``
decides when to call it and retries when it fails.

Built-in purgers: ``none`` (here), ``fastly``, ``cloudfront`` and ``varnish``
(in ``cdn.purgers``); plugins register more in the entry-point group
``cloudpypi.purgers.v1`` (the unversioned ``cloudpypi.purgers`` is still read).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

from cloudpypi_base import plugins
from cloudpypi_base.settings import Section

#: The entry-point group plugins register purgers in; ``v1`` is this Purger interface.
GROUP = "cloudpypi.purgers.v1"
#: The unversioned group of earlier releases: still read, with a deprecation warning.
LEGACY_GROUP = "cloudpypi.purgers"

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
    return plugins.known_names(BUILTIN, GROUP, LEGACY_GROUP)


def purger_class(name: str) -> type[Purger]:
    """The class behind a purger name; PurgerMisconfigured for an unknown name or a missing library."""
    return plugins.load_class(
        name,
        builtins=BUILTIN,
        group=GROUP,
        legacy_group=LEGACY_GROUP,
        base=Purger,
        error=PurgerMisconfigured,
        setting="[cdn] purge",
        plural="purgers",
    )


def from_config(settings: Mapping[str, str]) -> Purger:
    """The purger named by ``settings['purge']`` (default ``none``), built from the same section."""
    name = (settings.get("purge") or "none").strip()
    return purger_class(name).from_config(settings)


def section(settings: Mapping[str, str]) -> Section:
    """``[cdn]`` read with the shared typed getters; errors are PurgerMisconfigured."""
    return Section(settings, name="cdn", error=lambda message, key: PurgerMisconfigured(message))


def setting(settings: Mapping[str, str], key: str, default: str = "") -> str:
    """``settings[key]`` stripped, or ``default`` when absent or empty."""
    return section(settings).text(key, default)


def flag(settings: Mapping[str, str], key: str, default: bool) -> bool:
    """A yes/no setting: true/false, yes/no, on/off, 1/0."""
    return section(settings).flag(key, default)


def seconds(settings: Mapping[str, str], key: str, default: float) -> float:
    """A positive duration in seconds (``30``, ``30s``, ``5m``)."""
    value = section(settings).seconds(key, default, low=0.001)
    assert value is not None
    return value
