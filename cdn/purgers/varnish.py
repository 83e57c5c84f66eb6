"""Varnish: an HTTP ``PURGE`` (or ``BAN``) with the keys in a header, to every cache node.

Speaks to the shipped ``cdn/varnish/cloudpypi.vcl``: ``PURGE`` with an
``xkey`` header removes every object tagged with any of the space-separated
keys (vmod_xkey); with ``xkey-softpurge`` instead, they are only marked
stale. ``BAN`` with an ``xkey`` header adds a ban on those keys instead.
Each node must answer 200; if any does not, the whole purge is reported as
failed and will be repeated (purges are idempotent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cdn.purge import PurgeError, Purger, PurgerMisconfigured, flag, seconds, setting
from cdn.purgers._http import send

METHODS = ("purge", "ban")
#: Keys per request, to keep the header well under Varnish's 8 KB limit.
BATCH = 100


class VarnishPurger(Purger):
    """Purges surrogate keys on every node in ``urls``; paths are ignored."""

    name = "varnish"

    def __init__(
        self, *, urls: Sequence[str], method: str = "purge", soft: bool = False, timeout: float = 10.0
    ) -> None:
        if not urls:
            raise ValueError("at least one Varnish URL is needed")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}")
        self.urls = [u.rstrip("/") + "/" for u in urls]
        self.method = method
        self.soft = soft
        self.timeout = timeout

    @classmethod
    def from_config(cls, settings: Mapping[str, str]) -> VarnishPurger:
        """``varnish_urls`` (space-separated), ``varnish_method`` (purge or ban),
        ``varnish_soft_purge``, ``purge_timeout``."""
        urls = setting(settings, "varnish_urls").split()
        if not urls:
            raise PurgerMisconfigured("[cdn] varnish_urls is required for purge = varnish")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise PurgerMisconfigured(f"[cdn] varnish_urls: {url!r} is not an http:// URL")
        method = setting(settings, "varnish_method", "purge").lower()
        if method not in METHODS:
            raise PurgerMisconfigured(f"[cdn] varnish_method: {method!r} must be purge or ban")
        return cls(
            urls=urls,
            method=method,
            soft=flag(settings, "varnish_soft_purge", False),
            timeout=seconds(settings, "purge_timeout", 10.0),
        )

    def purge(self, keys: Sequence[str], paths: Sequence[str]) -> None:
        keys = list(dict.fromkeys(k for k in keys if k))
        if not keys:
            return
        header = "xkey-softpurge" if self.soft and self.method == "purge" else "xkey"
        errors = []
        for url in self.urls:
            try:
                for start in range(0, len(keys), BATCH):
                    send(
                        self.method.upper(),
                        url,
                        {header: " ".join(keys[start : start + BATCH])},
                        timeout=self.timeout,
                    )
            except PurgeError as exc:
                errors.append(str(exc))
        if errors:
            raise PurgeError(f"{len(errors)} of {len(self.urls)} Varnish nodes failed: " + "; ".join(errors))

    def describe(self) -> str:
        kind = "soft purge" if self.soft and self.method == "purge" else self.method
        return f"varnish {kind} on {' '.join(self.urls)}"
