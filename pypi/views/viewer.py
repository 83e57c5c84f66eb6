"""Who is asking: credentials on reads, the 401 challenge, and private responses.

Read views are wrapped in ``@reads``: it checks the request's credentials (if
any), answers 401 with ``WWW-Authenticate: Basic realm="pypi"`` when a read
needs credentials it lacks (or they are wrong), and makes every response to a
request with credentials private (``Cache-Control: private, no-store``, no
surrogate keys): what it shows depends on who asks.
"""

from __future__ import annotations

import contextvars
import functools
import math
from collections.abc import Callable

from webob import Request, Response

from cdn import policy
from cdn.urls import URLBuilder
from pypi import inline
from pypi.index import access, auth, tokens
from pypi.services import Services
from pypi.upstream import records
from pypi.upstream.proxy import NOTHING, Answer
from pypi.views.responses import error, tag

_current: contextvars.ContextVar[auth.User | None] = contextvars.ContextVar("cloudpypi_user", default=None)


def current() -> auth.User | None:
    """The user the request being answered proved itself as (None: anonymous)."""
    return _current.get()


def mode(svc: Services) -> str:
    return svc.config.access.read


def challenge(message: str = "Unauthorized: this index needs credentials to read") -> Response:
    response = error(401, message)
    response.headers["WWW-Authenticate"] = 'Basic realm="pypi"'
    return response


def client_address(request: Request) -> str:
    return request.remote_addr or "unknown"


def login(svc: Services, request: Request, username: str, password: str) -> auth.User | Response:
    """The user these credentials prove, or the response refusing them (401, or 429 when throttled).

    Used by reads and uploads alike; failures are throttled per address and per username.
    """
    t = svc.throttle
    address = client_address(request)
    wait = t.retry_after(address)
    if wait > 0:
        response = error(429, "Too Many Requests: too many failed logins from this address; retry later")
        response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return response
    t.before_check(username)
    with svc.db.reading() as tx:
        user = auth.authenticate(tx, username, password)
    if user is None:
        t.failed(address, username)
        return challenge("Invalid or non-existent authentication information.")
    return user


def identify(svc: Services, request: Request) -> auth.User | None | Response:
    """The reader (None: anonymous), or the response to send instead (401, 403, 429)."""
    credentials = auth.parse_basic(request.headers.get("Authorization"))
    if credentials is None:
        if mode(svc) == access.AUTHENTICATED:
            return challenge()
        return None
    user = login(svc, request, *credentials)
    if isinstance(user, Response):
        return user
    if mode(svc) == access.AUTHENTICATED and not tokens.allows(user, "read"):
        return error(403, f"Forbidden: this API token ({tokens.describe(user)}) does not allow reading")
    return user


def private(response: Response) -> Response:
    """Mark a response as depending on who asks: never stored by a shared cache."""
    return tag(response, policy.PRIVATE)


def reads(view: Callable[..., Response]) -> Callable[..., Response]:
    """Wrap a read view: identify the reader first, and keep what it sees out of shared caches."""

    @functools.wraps(view)
    def wrapper(svc: Services, request: Request, **kwargs) -> Response:
        if request.headers.get("Authorization"):  # a password hash to check: not in an event loop
            inline.require_thread(request.environ)
        user = identify(svc, request)
        if isinstance(user, Response):
            return private(user)
        token = _current.set(user)
        try:
            response = view(svc, request, **kwargs)
        except access.Denied as exc:
            response = error(exc.status, exc.message)
        finally:
            _current.reset(token)
        if (
            user is not None
            or request.headers.get("Authorization")
            or mode(svc) == access.AUTHENTICATED
            or getattr(response, "personal", False)
        ):
            private(response)
        return response

    return wrapper


def upstream_answer(svc: Services, normalized: str) -> Answer:
    """What the upstream proxy adds to a project page; ``NOTHING`` without ``[upstream] mode = proxy``."""
    return svc.upstream.before_project(normalized) if svc.upstream is not None else NOTHING


def can_read(svc: Services, tx, project) -> bool:
    """Whether the current viewer may read ``project``; False for None (as if it did not exist)."""
    return project is not None and access.can_read(tx, current(), project, mode(svc))


def visibility(svc: Services, tx) -> access.Visibility:
    """Which projects the current viewer may see in listings."""
    return access.visibility(tx, current(), mode(svc))


def protected(svc: Services, tx, project) -> bool:
    """Whether the project's files need the application's check (private, or a closed index)."""
    return mode(svc) == access.AUTHENTICATED or access.is_private(tx, project)


def file_urls(svc: Services, tx, project) -> URLBuilder:
    """Where the project's file links point: the public files URL, or, for files that need
    a check, this application's own /packages/ (which checks, then redirects to a signed URL).

    In proxy mode behind ``[cdn] files_url``, a proxied file not pulled from upstream yet
    links to this application too: the CDN's origin may be the store, which lacks it; here
    the first download pulls it."""
    if protected(svc, tx, project):
        return svc.own_urls
    if svc.upstream is not None and svc.config.cdn.files_url:
        pending = records.not_stored(tx, project["id"])
        if pending:
            return PullThrough(svc.urls, svc.own_urls, pending)
    return svc.urls


class PullThrough(URLBuilder):
    """The files URL, except for the paths in ``pending``: this application's own URL."""

    def __init__(self, urls: URLBuilder, own: URLBuilder, pending: set[str]) -> None:
        super().__init__(urls.base, prefix=urls.prefix)
        self._own = own
        self._pending = pending

    def file_url(self, path: str) -> str:
        return self._own.file_url(path) if path in self._pending else super().file_url(path)


def check_file(svc: Services, path: str) -> bool | Response:
    """Whether the file at ``path`` needs the application's check (True: passed it), or the
    404/403 refusing it. A file of a project the reader may not see does not exist."""
    with svc.db.reading() as tx:
        if mode(svc) == access.PUBLIC:
            # Only private projects' files need the check: their paths are held per serial.
            project = svc.private_files.project_of(tx, path)
            if project is None:
                return False
        else:
            project = access.file_project(tx, path)
            if project is None:
                return True
        if not access.can_read(tx, current(), project, mode(svc)):
            return error(404, "Not Found")
    return True


def signed_file_url(svc: Services, path: str) -> str | None:
    """A signed, expiring URL for the file (CloudFront, else the store's own), or None: stream it."""
    expires = svc.config.access.signed_url_expires
    if svc.cloudfront is not None:
        return svc.cloudfront.sign(svc.urls.file_url(path), expires)
    return svc.storage.signed_url(path, expires)
