"""The simple repository API: PEP 503 HTML and PEP 691 JSON (with PEP 592, 658/714, 700)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Sequence
from html import escape

from packaging.utils import canonicalize_name
from webob import Request, Response
from webob.acceptparse import create_accept_header

from cdn import policy
from cdn.urls import URLBuilder
from pypi import inline
from pypi.index import access, cache_keys, journal, packages, segmented, shared_pages, stream
from pypi.index.db import Tx
from pypi.index.shared_pages import Page
from pypi.services import Services
from pypi.views import viewer
from pypi.views.encoding import page_response
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


def _response(request: Request, page: Page, content_type: str, serial: int, keys: list[str]) -> Response:
    response = page_response(request, page, content_type, vary=("Accept",))
    response.headers["X-PyPI-Last-Serial"] = str(serial)
    return tag(response, policy.INDEX, keys)


def slashless(svc: Services, request: Request) -> Response:
    """/simple: 301 to /simple/ as on pypi.org (bandersnatch's simple-API mode asks for it)."""
    query = f"?{request.query_string}" if request.query_string else ""
    return redirect("/simple/" + query, keys=[cache_keys.INDEX_KEY])


#: The version of the name lists: the HTML /simple/ changes only with it.
NAME_SET_SQL = segmented.NAME_SET_SQL
#: The JSON /simple/ carries every project's serial; it is brought up to date at most once a second.
JSON_INDEX_MAX_AGE = 1.0
_HTML_HEAD = (
    "<!DOCTYPE html>\n<html>\n  <head>\n"
    f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n'
    "    <title>Simple index</title>\n  </head>\n  <body>\n"
).encode()
_HTML_TAIL = b"  </body>\n</html>\n"


def _html_entries(rows: Sequence[tuple]) -> str:
    names = segmented.escaped([r[0] for r in rows], escape)
    normalized = segmented.escaped([r[1] for r in rows], escape)
    return "".join(
        [f'    <a href="/simple/{n}/">{m}</a><br/>\n' for m, n in zip(names, normalized, strict=True)]
    )


def _json_entries(rows: Sequence[tuple]) -> str:
    names = segmented.json_strings([r[0] for r in rows])
    return ", ".join(
        [f'{{"name": {n}, "_last-serial": {int(r[2])}}}' for n, r in zip(names, rows, strict=True)]
    )


def _json_head(serial: int) -> bytes:
    meta = json.dumps({"api-version": API_VERSION, "_last-serial": serial})
    return f'{{"meta": {meta}, "projects": ['.encode()


def _spec(fmt: str, public: bool) -> segmented.Spec:
    suffix = segmented.PUBLIC_SUFFIX if public else ""
    if fmt == "html":
        return segmented.Spec(
            f"segmented/simple/html{suffix}",
            _html_entries,
            lambda _version: _HTML_HEAD,
            _HTML_TAIL,
            public=public,
            keep_body=True,
        )
    return segmented.Spec(
        f"segmented/simple/json{suffix}",
        _json_entries,
        _json_head,
        b"]}",
        joiner=b", ",
        names_only=False,
        public=public,
    )


#: (format, public) -> the segmented page: public ones list only public projects, for every
#: reader from whom exactly the private projects are hidden (anonymous readers among them).
SPECS = {(fmt, public): _spec(fmt, public) for fmt in ("html", "json") for public in (False, True)}


def _name_set(tx) -> str:
    return str(tx.scalar(NAME_SET_SQL) or 0)


@inline.capable
@viewer.reads
def index(svc: Services, request: Request) -> Response:
    """/simple/: every project the reader may see.

    A reader who sees every project, or every public one, gets the page kept for the
    deployment as segments (pypi.index.segmented); one who sees some other set gets a
    page rendered for what they may see, kept in this process's render cache by serial.
    """
    content_type = negotiate(request)
    if content_type is None:
        return error(406, "Not Acceptable: use application/vnd.pypi.simple.v1+json or text/html")
    fmt = FORMATS[content_type]
    quick = inline.active(request.environ)
    with svc.db.reading() as tx:
        vis = viewer.visibility(svc, tx)
        serial = journal.last_serial(tx)
        if vis.shared is None:
            key = ("simple-index", serial, fmt, vis.key)
            page = svc.renders.get(key) if quick else None
            if page is not None:
                return _response(request, page, content_type, serial, [cache_keys.INDEX_KEY])
            inline.require_thread(request.environ)
            return _rendered_index(svc, request, tx, vis, serial, content_type)
        version = serial if fmt == "json" else int(_name_set(tx))
    spec = SPECS[fmt, vis.shared == access.PUBLIC_ONLY]
    max_age = JSON_INDEX_MAX_AGE if fmt == "json" else 0.0
    held = svc.segments.current(spec, version, max_age=max_age) if quick else None
    if held is None:
        inline.require_thread(request.environ)
        try:
            held = svc.segments.get(spec, version, max_age=max_age)
        except segmented.Busy:  # another process is building the deployment's copy: render this one
            with svc.db.reading() as tx:
                return _rendered_index(svc, request, tx, vis, journal.last_serial(tx), content_type)
    if fmt == "json":
        serial = held.version
    return _response(request, held, content_type, serial, [cache_keys.INDEX_KEY])


def _rendered_index(
    svc: Services, request: Request, tx, vis: access.Visibility, serial: int, content_type: str
) -> Response:
    """/simple/ rendered for what ``vis`` shows, kept in this process's render cache by serial."""
    fmt = FORMATS[content_type]
    page = svc.renders.get_or_render(
        ("simple-index", serial, fmt, vis.key),
        lambda: shared_pages.make_page(
            (_render_index_json(tx, serial, vis) if fmt == "json" else _render_index_html(tx, vis)),
            str(serial),
        ),
    )
    return _response(request, page, content_type, serial, [cache_keys.INDEX_KEY])


_INDEX_SQL = "SELECT name, normalized_name, last_serial FROM projects ORDER BY normalized_name"


def _render_index_html(tx, vis: access.Visibility | None = None) -> Iterator[bytes]:
    yield (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n'
        "    <title>Simple index</title>\n  </head>\n  <body>\n"
    ).encode()
    batch: list[str] = []
    for name, normalized, _ in stream.rows(tx, _INDEX_SQL):
        if vis is not None and not vis.shows(normalized):
            continue
        batch.append(f'    <a href="/simple/{escape(normalized)}/">{escape(name)}</a><br/>\n')
        if len(batch) >= 10_000:
            yield "".join(batch).encode()
            batch = []
    batch.append("  </body>\n</html>\n")
    yield "".join(batch).encode()


def _render_index_json(tx, serial: int, vis: access.Visibility | None = None) -> Iterator[bytes]:
    meta = json.dumps({"api-version": API_VERSION, "_last-serial": serial})
    yield f'{{"meta": {meta}, "projects": ['.encode()
    dumps = json.dumps
    batch: list[str] = []
    first = True
    for name, normalized, last_serial in stream.rows(tx, _INDEX_SQL):
        if vis is not None and not vis.shows(normalized):
            continue
        batch.append(f'{"" if first else ", "}{{"name": {dumps(name)}, "_last-serial": {int(last_serial)}}}')
        first = False
        if len(batch) >= 10_000:
            yield "".join(batch).encode()
            batch = []
    batch.append("]}")
    yield "".join(batch).encode()


@inline.capable
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
    if svc.upstream is not None:  # the upstream may be asked: not in an event loop
        inline.require_thread(request.environ)
    upstream = viewer.upstream_answer(svc, normalized)
    if upstream.error is not None:
        return upstream.error
    with svc.db.reading() as tx:
        row = packages.get_project(tx, normalized)
        if not viewer.can_read(svc, tx, row):
            return error(404, f"Not Found: no project named {name!r}", kind=policy.MISSING, keys=[key])
        serial = row["last_serial"]
        urls = viewer.file_urls(svc, tx, row)
        page = project_page(
            svc,
            tx,
            f"simple/{normalized}/{fmt}",
            serial,
            lambda: _render_project(
                urls, row, packages.project_files(tx, row["id"]), packages.releases(tx, row["id"]), fmt
            ),
            base=urls.base,
            cached_only=inline.active(request.environ),
        )
    response = _response(request, page, content_type, serial, [key])
    return upstream.decorate(response)


def project_page(
    svc: Services,
    tx: Tx,
    name: str,
    serial: int,
    render: Callable[[], bytes | None],
    *,
    base: str | None = None,
    cached_only: bool = False,
) -> Page | None:
    """A project's page at ``serial`` with file links under ``base`` (default: the index's
    files URL): this process's cache, else the deployment's stored copy (large pages only),
    else rendered (and stored when large). ``cached_only``: this process's cache or
    NeedsThread (an answer from the event loop, pypi.inline)."""
    version = f"{serial} {svc.urls.base if base is None else base}"
    if cached_only:
        cached = svc.renders.get((name, version))
        if cached is None:
            raise inline.NeedsThread
        return cached  # type: ignore[return-value]

    def load() -> Page | None:
        page = shared_pages.stored(tx, name, version)
        if page is None:
            body = render()
            if body is None:
                return None
            page = shared_pages.make_page(body, version)
            shared_pages.store_large(tx, name, page)
        return page

    return svc.renders.get_or_load((name, version), load)


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
