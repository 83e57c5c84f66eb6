"""The guard every request passes before and after its route: malformed input is a 4xx, never a 500.

``refuse`` answers what no view should have to parse: a path or query string
that is not UTF-8 once percent-decoded, control characters (CR/LF would reach
the ``Location`` of a redirect and the surrogate keys), and project names that
cannot exist (they are ASCII). ``unsafe_headers`` is the last check before a
response leaves: a header value that cannot go on the wire turns the response
into a plain 500, logged, instead of a broken connection or a split header.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from webob import Request, Response

from pypi.views.responses import error

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def refuse(request: Request) -> Response | None:
    """The 400 for a request no route can answer sensibly, or None to dispatch it."""
    raw_path = request.environ.get("PATH_INFO", "")
    try:
        path = raw_path.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return error(400, "Bad Request: the path is not valid UTF-8")
    if _CONTROL.search(path):
        return error(400, "Bad Request: control characters in the path")
    query = request.environ.get("QUERY_STRING", "")
    if query:
        try:
            decoded = unquote_to_bytes(query.replace("+", " ")).decode("utf-8")
        except UnicodeError:
            return error(400, "Bad Request: the query string is not valid UTF-8")
        if _CONTROL.search(decoded):
            return error(400, "Bad Request: control characters in the query string")
    return None


def unknown_name(name: str, version: str = "") -> Response | None:
    """404 for a project name or version that cannot exist: both are ASCII, so anything else
    names nothing (and must not reach a ``Surrogate-Key`` or ``Location`` header)."""
    if not name.isascii():
        return error(404, f"Not Found: no project named {name!r}")
    if not version.isascii():
        return error(404, "Not Found: no such release")
    return None


def unsafe_headers(response: Response) -> list[str]:
    """The names of headers whose values cannot be sent: not Latin-1, or with CR, LF or NUL."""
    bad = []
    for name, value in response.headerlist:
        try:
            value.encode("latin-1")
        except UnicodeError:
            bad.append(name)
            continue
        if _CONTROL.search(value.replace("\t", " ")):
            bad.append(name)
    return bad
