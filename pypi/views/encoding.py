"""Responses for pages kept with their gzip form (pypi.index.shared_pages.Page)."""

from __future__ import annotations

import functools
from typing import Any

from webob import Request, Response


@functools.lru_cache(maxsize=256)
def _gzip_ok(accept_encoding: str) -> bool:
    """Whether the Accept-Encoding header accepts gzip (``gzip;q=0`` refuses it)."""
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip", "*"):
            q = params.strip().lower()
            if q.startswith("q="):
                try:
                    return float(q[2:]) > 0
                except ValueError:
                    return False
            return True
    return False


def accepts_gzip(request: Request) -> bool:
    return _gzip_ok(request.headers.get("Accept-Encoding") or "")


def page_response(request: Request, page: Any, content_type: str, *, vary: tuple[str, ...] = ()) -> Response:
    """The page (a shared_pages.Page or a segmented.Assembled), gzip-encoded when the client
    accepts it; the two encodings have distinct ETags. The body goes out as the chunks the
    page holds, never joined into one more copy."""
    if accepts_gzip(request):
        response = Response(app_iter=page.gzip_iter(), content_type=content_type)
        response.content_length = page.gzip_length
        response.content_encoding = "gzip"
        response.etag = page.etag + "-gzip"
    else:
        response = Response(app_iter=page.identity_chunks(), content_type=content_type)
        response.content_length = page.length
        response.etag = page.etag
    if "html" in content_type:
        response.charset = "utf-8"
    response.vary = (*vary, "Accept-Encoding")
    response.conditional_response = True
    return response
