"""The simple repository API: PEP 503 HTML and PEP 691 JSON (with PEP 592, 658/714, 700)."""

from __future__ import annotations

import functools
import hashlib
import json
from html import escape

from packaging.utils import canonicalize_name
from webob import Request, Response
from webob.acceptparse import create_accept_header

from cdn import policy
from cdn.urls import URLBuilder
from pypi.index import access, cache_keys, journal, packages
from pypi.services import Services
from pypi.views import viewer
from pypi.views.responses import error, redirect, tag

API_VERSION = "1.1"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "application/vnd.pypi.simple.v1+html"
#: Offered in this order, so a tie (``*/*``) answers HTML as pypi.org does.
OFFERS = ["text/html", HTML_TYPE, JSON_TYPE]
FORMATS = {JSON_TYPE: "json", HTML_TYPE: "html", "text/html": "html"}


def negotiate(request: Request) -> str | None:
    """The content type to answer with (PEP 691), or None when nothing offered is acceptable.

    ``?format=`` overrides the Accept header, as on pypi.org.
    """
    fmt = request.GET.get("format") if request.query_string else None
    if fmt:
        return fmt if fmt in OFFERS else None
    return _best_offer(request.headers.get("Accept") or "")


@functools.lru_cache(maxsize=256)
def _best_offer(accept: str) -> str | None:
    """Negotiation per Accept header; clients send a handful of distinct headers, so it is cached."""
    if not accept.strip():
        return "text/html"
    acceptable = create_accept_header(accept).acceptable_offers(OFFERS)
    return acceptable[0][0] if acceptable else None


def _rendered(body: bytes) -> tuple[bytes, str]:
    """A rendered page with its ETag, computed once and cached with it."""
    return body, hashlib.md5(body).hexdigest()


def _response(page: tuple[bytes, str], content_type: str, serial: int, keys: list[str]) -> Response:
    body, etag = page
    response = Response(body=body, content_type=content_type)
    if "html" in content_type:
        response.charset = "utf-8"
    response.headers["X-PyPI-Last-Serial"] = str(serial)
    response.vary = ("Accept",)
    response.etag = etag
    response.conditional_response = True
    return tag(response, policy.INDEX, keys)


def slashless(svc: Services, request: Request) -> Response:
    """/simple: 301 to /simple/ as on pypi.org (bandersnatch's simple-API mode asks for it)."""
    query = f"?{request.query_string}" if request.query_string else ""
    return redirect("/simple/" + query, keys=[cache_keys.INDEX_KEY])


@viewer.reads
def index(svc: Services, request: Request) -> Response:
    """/simple/: every project the reader may see."""
    content_type = negotiate(request)
    if content_type is None:
        return error(406, "Not Acceptable: use application/vnd.pypi.simple.v1+json or text/html")
    with svc.db.reading() as tx:
        serial = journal.last_serial(tx)
        vis = access.visibility(tx, viewer.current(), viewer.mode(svc))
        body = svc.renders.get_or_render(
            ("simple-index", serial, FORMATS[content_type], vis.key),
            lambda: _rendered(
                _render_index(vis.filter(packages.all_projects(tx)), serial, FORMATS[content_type])
            ),
        )
    return _response(body, content_type, serial, [cache_keys.INDEX_KEY])


def _render_index(projects: list, serial: int, fmt: str) -> bytes:
    if fmt == "json":
        return json.dumps(
            {
                "meta": {"api-version": API_VERSION, "_last-serial": serial},
                "projects": [{"name": p["name"], "_last-serial": p["last_serial"]} for p in projects],
            }
        ).encode()
    rows = "".join(
        f'    <a href="/simple/{escape(p["normalized_name"])}/">{escape(p["name"])}</a><br/>\n'
        for p in projects
    )
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n'
        "    <title>Simple index</title>\n  </head>\n  <body>\n"
        f"{rows}  </body>\n</html>\n"
    ).encode()


@viewer.reads
def project(svc: Services, request: Request, name: str) -> Response:
    """/simple/<name>/: the project's files."""
    normalized = canonicalize_name(name)
    if name != normalized or not request.path_info.endswith("/"):
        return redirect(f"/simple/{normalized}/", keys=[cache_keys.project_key(normalized)])
    content_type = negotiate(request)
    if content_type is None:
        return error(406, "Not Acceptable: use application/vnd.pypi.simple.v1+json or text/html")
    fmt = FORMATS[content_type]
    key = cache_keys.project_key(normalized)
    upstream = svc.upstream.before_project(normalized) if svc.upstream is not None else None
    if upstream is not None and upstream.error is not None:
        return upstream.error
    with svc.db.reading() as tx:
        row = packages.get_project(tx, normalized)
        if row is None or not access.can_read(tx, viewer.current(), row, viewer.mode(svc)):
            return error(404, f"Not Found: no project named {name!r}", kind=policy.MISSING, keys=[key])
        serial = row["last_serial"]
        urls = viewer.file_urls(svc, tx, row)
        body = svc.renders.get_or_render(
            ("simple", normalized, serial, fmt, urls.base),
            lambda: _rendered(
                _render_project(
                    urls, row, packages.project_files(tx, row["id"]), packages.releases(tx, row["id"]), fmt
                )
            ),
        )
    response = _response(body, content_type, serial, [key])
    return upstream.decorate(response) if upstream is not None else response


def _render_project(urls: URLBuilder, project_row, files: list, releases: list, fmt: str) -> bytes:
    name = project_row["name"]
    if fmt == "json":
        return json.dumps(
            {
                "meta": {"api-version": API_VERSION, "_last-serial": project_row["last_serial"]},
                "name": project_row["normalized_name"],
                "versions": sorted({r["version"] for r in releases}, key=packages.version_key),
                "files": [_file_json(urls, f) for f in files],
            }
        ).encode()
    links = []
    for f in files:
        attrs = [f'href="{escape(urls.file_url(f["path"]))}#sha256={f["sha256_digest"]}"']
        if f["requires_python"]:
            attrs.append(f'data-requires-python="{escape(f["requires_python"])}"')
        if f["yanked"]:
            attrs.append(f'data-yanked="{escape(f["yanked_reason"] or "")}"')
        if f["metadata_sha256"]:
            meta = f"sha256={f['metadata_sha256']}"
            attrs.append(f'data-dist-info-metadata="{meta}" data-core-metadata="{meta}"')
        links.append(f"    <a {' '.join(attrs)}>{escape(f['filename'])}</a><br/>\n")
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n'
        f"    <title>Links for {escape(name)}</title>\n  </head>\n  <body>\n"
        f"    <h1>Links for {escape(name)}</h1>\n{''.join(links)}  </body>\n</html>\n"
    ).encode()


def _file_json(urls: URLBuilder, f) -> dict:
    meta = {"sha256": f["metadata_sha256"]} if f["metadata_sha256"] else False
    return {
        "filename": f["filename"],
        "url": urls.file_url(f["path"]),
        "hashes": {"sha256": f["sha256_digest"]},
        "requires-python": f["requires_python"] or None,
        "yanked": (f["yanked_reason"] or True) if f["yanked"] else False,
        "core-metadata": meta,
        "data-dist-info-metadata": meta,
        "size": f["size"],
        "upload-time": f["upload_time"],
    }
