"""The cache policy: which caching headers each kind of response gets.

One table, read plainly. Every response the application sends is tagged with
a kind (and the surrogate keys naming what it shows) and passes through
``CachePolicy.headers``. Values are configurable in ``[cdn]``; the defaults
are pypi.org's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cloudpypi_base.settings import Section

#: Kinds of response.
FILE = "file"  # a package file or .metadata: never changes
INDEX = "index"  # /simple/, /simple/<name>/, JSON API, XML-RPC reads
HTML = "html"  # public HTML pages
MISSING = "missing"  # 404 for a project that may be created any second
PRIVATE = "private"  # depends on who asks: authenticated, uploads, errors after auth
KINDS = (FILE, INDEX, HTML, MISSING, PRIVATE)


@dataclass(frozen=True)
class CacheRule:
    """The caching headers of one kind of response (None: header not sent)."""

    cache_control: str
    surrogate_control: str | None = None
    #: Whether the response carries surrogate keys (for purging).
    keyed: bool = False


def _directives(*pairs: tuple[str, int | None]) -> str:
    return ", ".join(name if value is None else f"{name}={value}" for name, value in pairs)


def _int(settings: Mapping[str, str], key: str, default: int) -> int:
    """A whole, non-negative number of seconds (the shared settings grammar's ``whole``)."""
    section = Section(settings, name="cdn", error=lambda message, _key: ValueError(message))
    value = section.whole(key, default, low=0)
    assert value is not None
    return value


class CachePolicy:
    """kind -> headers. Build with ``from_config``; defaults match pypi.org."""

    def __init__(self, rules: Mapping[str, CacheRule], *, key_header: str = "Surrogate-Key") -> None:
        missing = set(KINDS) - set(rules)
        if missing:
            raise ValueError(f"cache policy lacks rules for {sorted(missing)}")
        self.rules = dict(rules)
        self.key_header = key_header

    @classmethod
    def from_config(cls, settings: Mapping[str, str]) -> CachePolicy:
        """Read the ``[cdn]`` section; ValueError names a bad key."""
        files_max_age = _int(settings, "files_max_age", 365000000)
        index_max_age = _int(settings, "index_max_age", 600)
        html_max_age = _int(settings, "html_max_age", 60)
        missing_max_age = _int(settings, "missing_max_age", 60)
        surrogate_max_age = _int(settings, "surrogate_max_age", 86400)
        swr = _int(settings, "stale_while_revalidate", 300)
        sie = _int(settings, "stale_if_error", 86400)
        surrogate = _directives(
            ("max-age", surrogate_max_age), ("stale-while-revalidate", swr), ("stale-if-error", sie)
        )
        rules = {
            FILE: CacheRule(_directives(("max-age", files_max_age), ("immutable", None), ("public", None))),
            INDEX: CacheRule(_directives(("max-age", index_max_age), ("public", None)), surrogate, True),
            HTML: CacheRule(_directives(("max-age", html_max_age), ("public", None)), surrogate, True),
            MISSING: CacheRule(
                _directives(("max-age", missing_max_age), ("public", None)),
                _directives(("max-age", missing_max_age)),
                True,
            ),
            PRIVATE: CacheRule("private, no-store"),
        }
        return cls(rules, key_header=settings.get("surrogate_key_header") or "Surrogate-Key")

    def cache_control(self, kind: str) -> str:
        """The Cache-Control of ``kind`` alone: what a store that serves files itself is told
        to answer with (``FILE``), so that a redirect to the store caches as a proxied file does."""
        return self.rules[kind].cache_control

    def headers(self, kind: str, keys: Iterable[str] = ()) -> list[tuple[str, str]]:
        """The caching headers for a response of ``kind`` showing ``keys``."""
        rule = self.rules[kind]
        out = [("Cache-Control", rule.cache_control)]
        if rule.surrogate_control:
            out.append(("Surrogate-Control", rule.surrogate_control))
        if rule.keyed:
            keys = [k for k in dict.fromkeys(keys) if k]
            if keys:
                out.append((self.key_header, " ".join(keys)))
        return out
