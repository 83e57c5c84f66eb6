"""Responses for pages kept with their gzip form (pypi.index.shared_pages.Page)."""

from __future__ import annotations

import functools

from webob import Request, Response

from pypi.index.shared_pages import Page, gunzipped


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


def page_response(request: Request, page: Page, content_type: str, *, vary: tuple[str, ...] = ()) -> Response:
    """The page, gzip-encoded when the client accepts it; the two encodings have distinct ETags."""
    if accepts_gzip(request):
        response = Response(body=page.gzip, content_type=content_type)
        response.content_encoding = "gzip"
        response.etag = page.etag + "-gzip"
    elif page.has_body:
        response = Response(body=page.body, content_type=content_type)
        response.etag = page.etag
    else:  # kept compressed only: decompressed as it is sent
        response = Response(app_iter=gunzipped(page.gzip), content_type=content_type)
        response.content_length = page.length
        response.etag = page.etag
    if "html" in content_type:
        response.charset = "utf-8"
    response.vary = (*vary, "Accept-Encoding")
    response.conditional_response = True
    return response
