"""make_app(config) -> the WSGI application: the route table and the one exit for headers."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable

from webob import Request, Response

import storage
from cdn import policy, signing
from cdn.policy import CachePolicy
from cdn.urls import URLBuilder
from pypi import inline
from pypi.config import Config, ConfigError
from pypi.index.access import PrivateFiles
from pypi.index.db import Database, DatabaseError
from pypi.index.objects import PACKAGES_PREFIX
from pypi.index.render_cache import RenderCache
from pypi.index.segmented import SegmentedPages
from pypi.index.throttle import LoginThrottle
from pypi.proxies import TrustedProxies
from pypi.services import Services
from pypi.upload.pipeline import Uploader
from pypi.views import files, guard, json_api, simple, upload, web, xmlrpc
from pypi.views.responses import error

log = logging.getLogger("cloudpypi")

View = Callable[..., Response]

#: (methods, path pattern, view). Named groups become keyword arguments.
ROUTES: list[tuple[tuple[str, ...], str, View]] = [
    (("GET", "HEAD"), r"/simple/", simple.index),
    (("GET", "HEAD"), r"/simple", simple.slashless),
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
        self.proxies = TrustedProxies(services.config.server.trusted_proxies)

    @property
    def answers_inline(self) -> bool:
        """Whether a server may ask for cheap answers from its event loop (pypi.inline): with a
        database on this host (SQLite, PostgreSQL over loopback or a Unix socket), whose reads
        take tens of microseconds. To a PostgreSQL across a network every request waits for a
        network round trip, which threads overlap and an event loop would not."""
        return self.services.config.server.inline_answers and self.services.db.local

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        # Before anything reads the request: forwarding headers only from trusted proxies.
        self.proxies.apply(environ)
        request = Request(environ)
        started = time.perf_counter()
        try:
            response = guard.refuse(request) or self._dispatch(request)
            self._finish(response)
        except inline.NeedsThread:  # the worker answers it again on a thread (pypi.inline)
            raise
        except Exception:  # the one place an unexpected error becomes an answer
            log.exception("error on %s %r", request.method, environ.get("PATH_INFO"))
            response = self._internal_error()
        location = response.headers.get("Location")
        if location and location.startswith("/") and not location.startswith("//"):
            # WebOb would make it absolute from the request's Host: a cached 301 must not depend on it.
            response.headers["Location"] = self.services.config.public_url + location
        bad = guard.unsafe_headers(response)
        if bad:
            log.error("%s %r: unsendable header value in %s", request.method, environ.get("PATH_INFO"), bad)
            response = self._internal_error()
        if log.isEnabledFor(logging.DEBUG):  # the arguments cost as much as a small view
            log.debug(
                "%s %r -> %s in %.1f ms",
                request.method,
                environ.get("PATH_INFO"),
                response.status,
                (time.perf_counter() - started) * 1000,
            )
        return response(environ, start_response)

    def _internal_error(self) -> Response:
        """A plain 500: no traceback, no detail, never cached."""
        response = error(500, "Internal Server Error")
        self._finish(response)
        return response

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
            if not inline.is_capable(view):
                inline.require_thread(request.environ)
            args = m.groupdict()
            refused = guard.unknown_name(args.get("name") or "", args.get("version") or "")
            if refused is not None:
                return refused
            try:
                return view(self.services, request, **args)
            except DatabaseError as exc:
                log.error("database error on %s %s: %s", request.method, path, exc)
                return error(503, "Service Unavailable: the database cannot be reached")
            except storage.StorageUnavailable as exc:
                log.error("storage error on %s %s: %s", request.method, path, exc)
                return error(503, "Service Unavailable: the package store cannot be reached")
            except UnicodeDecodeError as exc:  # a form or header that is not UTF-8
                log.info("undecodable input on %s %s: %s", request.method, path, exc)
                return error(400, "Bad Request: the request is not valid UTF-8")
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
    from pypi.upstream.hooks import upstream_parts

    upstream, guard = upstream_parts(config, db, store)
    access = config.access
    cache_policy = CachePolicy.from_config(config.cdn.options)
    uploader = Uploader(
        db, store, after_commit=after_commit, cache_control=cache_policy.cache_control(policy.FILE)
    )
    uploader.guard = guard
    return Services(
        config=config,
        db=db,
        storage=store,
        urls=URLBuilder(config.cdn.files_url, config.webui.url, prefix=PACKAGES_PREFIX),
        policy=cache_policy,
        uploader=uploader,
        renders=RenderCache(config.webui.render_cache_size),
        segments=SegmentedPages(db),
        private_files=PrivateFiles(),
        throttle=LoginThrottle(
            access.login_burst, access.login_refill_seconds, access.login_user_burst, access.login_user_delay
        ),
        own_urls=URLBuilder("", config.webui.url, prefix=PACKAGES_PREFIX),
        cloudfront=_cloudfront_signer(config),
        upstream=upstream,
    )


def _cloudfront_signer(config: Config) -> signing.CloudFrontURLSigner | None:
    """The signer for private files behind CloudFront, checked at start (a bad key is a
    configuration error then, not a failed download later)."""
    if not config.cdn.files_url:
        return None
    try:
        return signing.from_config(config.cdn.options)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def make_app(
    config: Config,
    *,
    store: storage.Storage | None = None,
    db: Database | None = None,
    after_commit: Callable[[], None] | None = None,
) -> App:
    """The WSGI application for ``config`` (the schema must already be migrated)."""
    return App(build_services(config, store=store, db=db, after_commit=after_commit))
