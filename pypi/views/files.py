"""/packages/<path>: package files and their .metadata, streamed from storage.

One request to the store per download: GET opens the object (the reader
carries its size, ETag and Last-Modified), HEAD asks only for those. A Range
request asks the store for that range (an S3 Range GET, a Swift Range header,
a seek on a local file). Whole local files go out through the server's
``wsgi.file_wrapper`` (sendfile). 304 on a conditional GET (RFC 9110 13.2.2).
With ``[storage] serve = redirect`` a backend that has a public URL is
redirected to. The Content-Type comes from ``pypi.index.objects``, as the
stored object's does.
"""

from __future__ import annotations

import re
from typing import Any

from webob import Request, Response

import storage
from cdn import policy
from pypi.index.objects import PACKAGES_PREFIX, content_type_of
from pypi.services import Services
from pypi.views import viewer
from pypi.views.responses import error, redirect, tag

BLOCK = 256 * 1024

#: One ``bytes`` range: ``first-``, ``first-last`` or ``-suffix`` (RFC 9110 14.1.1).
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
#: What ``_requested_range`` returns for a range no object can satisfy (``bytes=-0``).
UNSATISFIABLE = (0, 0)


@viewer.reads
def serve(svc: Services, request: Request, rest: str) -> Response:
    path = PACKAGES_PREFIX + rest
    if request.method not in ("GET", "HEAD"):
        return error(405, "Method Not Allowed")
    checked = viewer.check_file(svc, path)
    if isinstance(checked, Response):
        return checked
    if checked:
        # A file that needed the check: never from a shared cache, and from a signed URL if possible.
        signed = viewer.signed_file_url(svc, path)
        if signed:
            return viewer.private(redirect(signed, status=302))
        response = _stream(svc, request, path, public=False)
        response.personal = True
        return response
    return _stream(svc, request, path)


def _stream(svc: Services, request: Request, path: str, *, public: bool = True) -> Response:
    if public and svc.config.storage.serve == "redirect":
        try:
            url = svc.storage.public_url(path)
        except storage.InvalidPath:
            return error(404, "Not Found")
        if url:
            if svc.upstream is not None:  # proxy mode: the first download pulls the file first
                failed = svc.upstream.fetch_file(path, check_store=False)
                if failed is not None:
                    return failed
            return redirect(url, status=302, kind=policy.FILE)
    if request.method == "HEAD":
        try:
            info = svc.storage.stat(path)
        except storage.NotFound:
            missing = _not_stored(svc, path)
            if missing is not None:
                return missing
            try:
                info = svc.storage.stat(path)
            except storage.NotFound:
                return error(404, "Not Found")
        except storage.InvalidPath:
            return error(404, "Not Found")
        except storage.StorageUnavailable:
            return error(503, "Storage unavailable, try again shortly")
        response = _file_response(path, info)
        if _not_modified(request, response):
            return _as_not_modified(response)
        response.app_iter = []
        response.content_length = info.size
        return response

    wanted = _requested_range(request)
    if wanted == UNSATISFIABLE:
        return _unsatisfiable(svc, path)
    start, stop = wanted or (0, None)
    try:
        f = svc.storage.open(path, start=start, stop=stop)
    except storage.NotFound:
        missing = _not_stored(svc, path)
        if missing is not None:
            return missing
        try:
            f = svc.storage.open(path, start=start, stop=stop)
        except storage.NotFound:
            return error(404, "Not Found")
        except storage.RangeNotSatisfiable:
            return _unsatisfiable(svc, path)
    except storage.InvalidPath:
        return error(404, "Not Found")
    except storage.RangeNotSatisfiable:
        return _unsatisfiable(svc, path)
    except storage.StorageUnavailable:
        return error(503, "Storage unavailable, try again shortly")
    info = f.info  # type: ignore[attr-defined]
    response = _file_response(path, info)
    if _not_modified(request, response):
        f.close()
        return _as_not_modified(response)
    served = getattr(f, "range", None)
    if served is not None and not _if_range_holds(request, response):
        # The client's copy is stale: it gets the whole object, not the part it asked for.
        f.close()
        try:
            f = svc.storage.open(path)
        except storage.NotFound:
            return error(404, "Not Found")
        except storage.StorageUnavailable:
            return error(503, "Storage unavailable, try again shortly")
        served = None
    # The body first, then its length: webob's app_iter setter drops a Content-Length set
    # before it, and the file went out chunked (no length for the client to check or show).
    if served is None:
        wrapper = request.environ.get("wsgi.file_wrapper")
        if wrapper is not None and hasattr(f, "fileno"):
            response.app_iter = wrapper(f, BLOCK)
        else:
            response.app_iter = _Chunks(f)
        response.content_length = info.size
        return response
    first, end = served
    response.status = 206
    response.content_range = (first, end, info.size)
    response.app_iter = _Chunks(f)
    response.content_length = end - first
    return response


def _not_stored(svc: Services, path: str) -> Response | None:
    """The answer for an object the store lacks: 404, or in proxy mode the upstream's answer;
    None once the proxy has pulled the file from upstream (verified and stored) on first download."""
    if svc.upstream is None:
        return error(404, "Not Found")
    return svc.upstream.fetch_file(path)


def _file_response(path: str, info: storage.ObjectInfo) -> Response:
    """The 200's headers: type, validators, ranges accepted, and the FILE cache kind."""
    response = Response(content_type=content_type_of(path), conditional_response=False)
    if response.content_type.startswith("text/"):
        response.charset = "utf-8"
    response.etag = info.etag
    response.last_modified = info.last_modified
    response.accept_ranges = "bytes"
    return tag(response, policy.FILE)


def _as_not_modified(response: Response) -> Response:
    """The 304: the validators and caching headers of the 200, no body (RFC 9110 15.4.5)."""
    response.status = 304
    response.app_iter = []
    del response.content_type
    del response.content_length
    return response


def _requested_range(request: Request) -> tuple[int, int | None] | None:
    """The one byte range asked for, as ``open``'s ``(start, stop)``; None for the whole object.

    A missing, malformed or multi-part Range is ignored (RFC 9110 14.2: the
    server may answer 200 with everything). ``bytes=-0`` asks for no byte
    at all: UNSATISFIABLE (416).
    """
    header = request.headers.get("Range")
    if not header:
        return None
    m = _RANGE.match(header)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:
        suffix = int(last)
        return UNSATISFIABLE if suffix == 0 else (-suffix, None)
    if not last:
        return int(first), None
    if int(last) < int(first):
        return None
    return int(first), int(last) + 1


def _if_range_holds(request: Request, response: Response) -> bool:
    """RFC 9110 13.1.5: a Range with If-Range applies only if the validator still matches."""
    if "If-Range" not in request.headers:
        return True
    return response in request.if_range


def _unsatisfiable(svc: Services, path: str) -> Response:
    """416 with ``Content-Range: bytes */size``; never cached (it depends on the Range asked)."""
    try:
        size = svc.storage.stat(path).size
    except (storage.NotFound, storage.InvalidPath):
        return error(404, "Not Found")
    except storage.StorageUnavailable:
        return error(503, "Storage unavailable, try again shortly")
    response = error(416, "Range Not Satisfiable", kind=policy.PRIVATE)
    response.headers["Content-Range"] = f"bytes */{size}"
    return response


def _not_modified(request: Request, response: Response) -> bool:
    """Whether to answer 304 (RFC 9110 13.2.2): If-None-Match wins over If-Modified-Since."""
    if request.if_none_match and response.etag:
        return response.etag in request.if_none_match
    if request.if_modified_since and response.last_modified:
        return response.last_modified <= request.if_modified_since
    return False


class _Chunks:
    """Iterate a stream in blocks to its end, closing it at the end (WSGI ``close``)."""

    def __init__(self, f: Any) -> None:
        self.f = f

    def __iter__(self):
        while True:
            block = self.f.read(BLOCK)
            if not block:
                return
            yield block

    def close(self) -> None:
        self.f.close()
