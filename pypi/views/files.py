"""/packages/<path>: package files and their .metadata, streamed from storage.

Streamed with the server's wsgi.file_wrapper (sendfile for local files),
with ETag, Last-Modified, 304 on conditional GET, Range and HEAD. With
``[storage] serve = redirect`` a backend that has a public URL is redirected to.
"""

from __future__ import annotations

from webob import Request, Response
from webob.static import FileIter

import storage
from cdn import policy
from pypi.services import Services
from pypi.views import viewer
from pypi.views.responses import error, redirect, tag

BLOCK = 256 * 1024


def content_type_of(path: str) -> str:
    if path.endswith(".metadata"):
        return "text/plain"
    if path.endswith((".whl", ".zip")):
        return "application/zip"
    return "application/octet-stream"


@viewer.reads
def serve(svc: Services, request: Request, rest: str) -> Response:
    path = "packages/" + rest
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
            return redirect(url, status=302, kind=policy.FILE)
    try:
        info = svc.storage.stat(path)
    except storage.NotFound:
        # Proxy mode: a proxied file is pulled from upstream (verified, stored) on first download.
        pulled = svc.upstream.fetch_file(path) if svc.upstream is not None else error(404, "Not Found")
        if pulled is not None:
            return pulled
        try:
            info = svc.storage.stat(path)
        except storage.NotFound:
            return error(404, "Not Found")
    except storage.InvalidPath:
        return error(404, "Not Found")
    except storage.StorageUnavailable:
        return error(503, "Storage unavailable, try again shortly")

    response = Response(content_type=content_type_of(path), conditional_response=True)
    if response.content_type.startswith("text/"):
        response.charset = "utf-8"
    response.content_length = info.size
    response.etag = info.etag
    response.last_modified = info.last_modified
    response.accept_ranges = "bytes"
    tag(response, policy.FILE)
    if request.method == "HEAD" or _not_modified(request, response):
        response.app_iter = []
        response.content_length = info.size
        return response
    try:
        f = svc.storage.open(path)
    except storage.NotFound:
        return error(404, "Not Found")
    except storage.StorageUnavailable:
        return error(503, "Storage unavailable, try again shortly")
    wrapper = request.environ.get("wsgi.file_wrapper")
    if request.range is None and wrapper is not None and hasattr(f, "fileno"):
        response.app_iter = wrapper(f, BLOCK)
    else:
        # FileIter seeks for a Range; a remote store's stream cannot, so WebOb skips by reading.
        response.app_iter = FileIter(f) if _seekable(f) else _chunks(f)
    response.content_length = info.size
    return response


def _not_modified(request: Request, response: Response) -> bool:
    """Whether WebOb will answer 304 (RFC 9110 13.2.2): If-None-Match wins over If-Modified-Since."""
    if request.if_none_match and response.etag:
        return response.etag in request.if_none_match
    if request.if_modified_since and response.last_modified:
        return response.last_modified <= request.if_modified_since
    return False


def _seekable(f) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False


class _chunks:
    """Iterate a non-seekable stream in blocks, closing it at the end."""

    def __init__(self, f) -> None:
        self.f = f

    def __iter__(self):
        while True:
            block = self.f.read(BLOCK)
            if not block:
                return
            yield block

    def close(self) -> None:
        self.f.close()
