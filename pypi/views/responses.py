"""Small helpers every view uses to build responses and tag them for the cache policy."""

from __future__ import annotations

import re
from collections.abc import Iterable

from webob import Response

from cdn import policy

_UNSAFE_STATUS = re.compile(r"[^\x20-\x7e]")


def tag(response: Response, kind: str, keys: Iterable[str] = ()) -> Response:
    """Mark the response's cache kind and the surrogate keys naming what it shows.

    An untagged response is treated as private by the application.
    """
    response.cache_kind = kind
    response.cache_keys = list(keys)
    return response


def error(status: int, message: str, *, kind: str = policy.PRIVATE, keys: Iterable[str] = ()) -> Response:
    """A plain-text error with the message in the status line and the body, as pypi.org does."""
    line = _UNSAFE_STATUS.sub(" ", message)[:400]
    response = Response(
        status=f"{status} {line}",
        body=(message + "\n").encode("utf-8"),
        content_type="text/plain",
        charset="utf-8",
    )
    return tag(response, kind, keys)


def redirect(
    location: str, *, status: int = 301, kind: str = policy.INDEX, keys: Iterable[str] = ()
) -> Response:
    response = Response(status=status, location=location, content_type="text/plain", charset="utf-8")
    response.text = f"Redirecting to {location}\n"
    return tag(response, kind, keys)
