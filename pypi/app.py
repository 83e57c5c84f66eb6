"""make_app(config) -> the WSGI application: the route table and the one exit for headers."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable

from webob import Request, Response

import storage
from cdn import policy
from cdn.policy import CachePolicy
from cdn.urls import URLBuilder
from pypi.config import Config
from pypi.index.db import Database, DatabaseError
from pypi.index.render_cache import RenderCache
from pypi.index.shared_pages import SharedPages
from pypi.services import Services
from pypi.upload.pipeline import Uploader
from pypi.views import files, json_api, simple, upload, web, xmlrpc
from pypi.views.responses import error

log = logging.getLogger("cloudpypi")

View = Callable[..., Response]

#: (methods, path pattern, view). Named groups become keyword arguments.
ROUTES: list[tuple[tuple[str, ...], str, View]] = [
    (("GET", "HEAD"), r"/simple/", simple.index),
    (("GET", "HEAD"), r"/simple/(?P<name>[^/]+)/?", simple.project),
    (("GET", "HEAD"), r"/pypi/(?P<name>[^/]+)/json", json_api.project_json),
    (("GET", "HEAD"), r"/pypi/(?P<name>[^/]+)/(?P<version>[^/]+)/json", json_api.project_json),
    (("GET", "HEAD"), r"/packages/(?P<rest>.+)", files.serve),
    (("POST",), r"/legacy/?", upload.legacy),
    (("POST",), r"/pypi/?", xmlrpc.pypi_post),  # XML-RPC when text/xml, else upload
    (("POST",), r"/RPC2/?", xmlrpc.rpc),
    (("POST",), r"/", upload.legacy),
    (("GET", "HEAD"), r"/", web.home),
    (("GET", "HEAD"), r"/project/(?P<name>[^/]+)/?", web.project),
    (("GET", "HEAD"), r"/project/(?P<name>[^/]+)/(?P<version>[^/]+)/?", web.project),
]


class App:
    """The WSGI application. Every response leaves through ``_finish``."""

    def __init__(self, services: Services, extra_routes: Iterable[tuple] = ()) -> None:
        self.services = services
        self.routes = [(set(m), re.compile(p + r"\Z"), v) for m, p, v in [*ROUTES, *extra_routes]]

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        started = time.perf_counter()
        response = self._dispatch(request)
        self._finish(response)
        log.debug(
            "%s %s -> %s in %.1f ms",
            request.method,
            request.path,
            response.status,
            (time.perf_counter() - started) * 1000,
        )
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        path = request.path_info or "/"
        allowed: set[str] = set()
        for methods, pattern, view in self.routes:
            m = pattern.match(path)
            if not m:
                continue
            if request.method not in methods:
                allowed |= methods
                continue
            try:
                return view(self.services, request, **m.groupdict())
            except DatabaseError as exc:
                log.error("database error on %s %s: %s", request.method, path, exc)
                return error(503, "Service Unavailable: the database cannot be reached")
            except storage.StorageUnavailable as exc:
                log.error("storage error on %s %s: %s", request.method, path, exc)
                return error(503, "Service Unavailable: the package store cannot be reached")
            except Exception:
                log.exception("error on %s %s", request.method, path)
                return error(500, "Internal Server Error")
        if allowed:
            response = error(405, "Method Not Allowed")
            response.allow = sorted(allowed)
            return response
        return error(404, "Not Found")

    def _finish(self, response: Response) -> None:
        """Apply the cache policy: the single place response caching headers are set."""
        kind = getattr(response, "cache_kind", policy.PRIVATE)
        keys = getattr(response, "cache_keys", ())
        # Views never set caching headers themselves, so the policy's are appended as they are.
        response.headerlist.extend(self.services.policy.headers(kind, keys))


def build_services(
    config: Config,
    *,
    store: storage.Storage | None = None,
    db: Database | None = None,
    after_commit: Callable[[], None] | None = None,
) -> Services:
    """Make the database, storage, URL builder, policy and pipeline from the configuration.

    ``after_commit`` is called after each committed upload or register (the purge worker's wake-up).
    """
    db = db or Database(config.database.url, pool_size=config.server.threads + 4)
    store = store or storage.from_config(config.storage.options, data_dir=config.data_dir)
    return Services(
        config=config,
        db=db,
        storage=store,
        urls=URLBuilder(config.cdn.files_url, config.webui.url),
        policy=CachePolicy.from_config(config.cdn.options),
        uploader=Uploader(db, store, after_commit=after_commit),
        renders=RenderCache(config.webui.render_cache_size),
        pages=SharedPages(db),
    )


def make_app(
    config: Config,
    *,
    store: storage.Storage | None = None,
    db: Database | None = None,
    after_commit: Callable[[], None] | None = None,
) -> App:
    """The WSGI application for ``config`` (the schema must already be migrated)."""
    return App(build_services(config, store=store, db=db, after_commit=after_commit))
