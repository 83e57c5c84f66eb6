"""The upstream parts an application is built with, from ``[upstream]``."""

from __future__ import annotations

import os
from collections.abc import Callable

from packaging.utils import canonicalize_name

import storage
from pypi.config import Config
from pypi.index.db import Database
from pypi.upstream.proxy import UpstreamProxy, refuse_upload


def upstream_parts(
    config: Config, db: Database, store: storage.Storage
) -> tuple[UpstreamProxy | None, Callable[[str], None] | None]:
    """(the proxy in proxy mode, else None; the upload guard when a mode is on, else None)."""
    settings = config.upstream
    if settings.mode == "off":
        return None, None
    allowed = {canonicalize_name(n) for n in settings.allow_shadowing}
    if settings.mode == "proxy":
        proxy = UpstreamProxy(db, store, settings, tmp_dir=os.path.join(config.data_dir, "tmp"))
        return proxy, proxy.check_upload

    def guard(name: str) -> None:
        refuse_upload(db, name, allowed, settings.url)

    return None, guard
