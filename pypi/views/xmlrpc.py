"""The XML-RPC API mirrors use (bandersnatch): POST /pypi (Content-Type text/xml) and /RPC2.

The methods pypi.org still answers for mirroring: list_packages,
list_packages_with_serial, changelog_last_serial, changelog_since_serial,
package_releases, release_urls and release_data. Requests and responses are
parsed and built by the standard library's ``xmlrpc.client``; an unknown
method, bad arguments or an unreadable body get an XML-RPC Fault (HTTP 200,
as XML-RPC requires).
"""

from __future__ import annotations

import datetime
import inspect
import json
import logging
import xmlrpc.client
from collections.abc import Callable
from typing import Any
from xml.parsers.expat import ExpatError

from webob import Request, Response

from cdn import policy
from pypi.index import access, cache_keys, journal, packages, segmented
from pypi.index.db import Tx
from pypi.index.packages import latest_release
from pypi.services import Services
from pypi.views import json_api, upload, viewer, xmlrpc_lists
from pypi.views.encoding import page_response
from pypi.views.file_info import file_info
from pypi.views.responses import error, tag

log = logging.getLogger(__name__)

#: The largest method call read; every call mirrors make is a few hundred bytes.
MAX_BODY = 1024 * 1024
#: Fault codes, as the XML-RPC error-code convention (and pypi.org) uses them.
PARSE_ERROR = -32700
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
XML_TYPES = ("text/xml", "application/xml")


class InvalidParams(Exception):
    """A method was called with arguments of the wrong kind."""


def is_xmlrpc(request: Request) -> bool:
    return request.content_type in XML_TYPES


def pypi_post(svc: Services, request: Request) -> Response:
    """POST /pypi: an XML-RPC call (text/xml) or a legacy upload (multipart), as on pypi.org."""
    if is_xmlrpc(request):
        return rpc(svc, request)
    return upload.legacy(svc, request)


@viewer.reads
def rpc(svc: Services, request: Request) -> Response:
    """Answer one XML-RPC method call."""
    if not is_xmlrpc(request):
        return error(415, "Unsupported Media Type: XML-RPC calls are sent as text/xml")
    length = request.content_length
    if length is not None and length > MAX_BODY:
        return error(413, f"Request Entity Too Large: XML-RPC calls are limited to {MAX_BODY} bytes")
    body = request.body_file.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        return error(413, f"Request Entity Too Large: XML-RPC calls are limited to {MAX_BODY} bytes")
    try:
        params, method = xmlrpc.client.loads(body, use_builtin_types=True)
    except xmlrpc.client.Fault:
        return _fault(PARSE_ERROR, "parse error; a fault is not a method call")
    except (ExpatError, xmlrpc.client.Error, ValueError, TypeError, LookupError, OverflowError) as exc:
        return _fault(PARSE_ERROR, f"parse error; not well formed: {exc}")
    if not isinstance(method, str):
        return _fault(METHOD_NOT_FOUND, "server error; no methodName: send a methodCall")
    func = METHODS.get(method)
    if func is None:
        return _fault(METHOD_NOT_FOUND, f"server error; requested method not found: {method!r}")
    oversized = _oversized_int(params)
    if oversized is not None:
        return _fault(
            INVALID_PARAMS,
            f"server error; invalid method parameters for {method}: "
            f"integer {oversized} does not fit in 64 bits",
        )
    try:
        inspect.signature(func).bind(svc, None, *params)
    except TypeError as exc:
        return _fault(INVALID_PARAMS, f"server error; invalid method parameters for {method}: {exc}")
    writer = xmlrpc_lists.WRITERS.get(method)
    if method == "changelog_since_serial" and (not isinstance(params[0], int) or isinstance(params[0], bool)):
        return _fault(
            INVALID_PARAMS,
            f"server error; invalid method parameters for {method}: "
            f"serial must be an integer, not {type(params[0]).__name__}",
        )
    if writer is not None:
        with svc.db.reading() as tx:
            shared = _visibility(svc, tx).shared
        if shared is not None and method in xmlrpc_lists.SHARED:  # the whole index: kept for all
            try:
                return _shared_list(svc, request, method, public=shared == access.PUBLIC_ONLY)
            except segmented.Busy:  # another process is building the deployment's copy
                pass  # answered from the database below
        if shared != access.EVERYTHING:
            writer = None  # private projects hidden from this caller: the filtering methods answer
    with svc.db.transaction() as tx:
        serial = journal.last_serial(tx)
        if writer is not None:  # the long lists: written from a cursor, not built as Python values
            body = writer(tx, *params)
        else:
            try:
                result = func(svc, tx, *params)
            except InvalidParams as exc:
                return _fault(INVALID_PARAMS, f"server error; invalid method parameters for {method}: {exc}")
            body = xmlrpc.client.dumps((result,), methodresponse=True, encoding="utf-8").encode("utf-8")
    response = Response(body=body, content_type="text/xml", charset="utf-8")
    tag(response, policy.INDEX, [cache_keys.INDEX_KEY])
    response.headers["X-PyPI-Last-Serial"] = str(serial)
    return response


#: XML-RPC's <int> is 32 bits; the <i8> extension 64. Larger values are refused, not sent to SQL.
INT64 = range(-(2**63), 2**63)


def _oversized_int(value: Any, depth: int = 0) -> int | None:
    """The first integer in ``value`` (nested lists and structs) outside 64 bits, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if value in INT64 else value
    if depth < 32 and isinstance(value, (list, tuple)):
        for item in value:
            found = _oversized_int(item, depth + 1)
            if found is not None:
                return found
    if depth < 32 and isinstance(value, dict):
        return _oversized_int(list(value.values()), depth + 1)
    return None


def _shared_list(svc: Services, request: Request, method: str, *, public: bool) -> Response:
    """list_packages(_with_serial): the deployment's segmented copy, brought up to date at most
    once a second (pypi.index.segmented), gzip-encoded for clients that accept it (bandersnatch)."""
    spec = xmlrpc_lists.SPECS[method, public]
    with svc.db.reading() as tx:
        serial = journal.last_serial(tx)
        version = int(tx.scalar(spec.version_sql) or 0)
    page = svc.segments.get(spec, version, max_age=xmlrpc_lists.MAX_AGE)
    response = page_response(request, page, "text/xml")
    response.charset = "utf-8"
    response.headers["X-PyPI-Last-Serial"] = str(page.version if not spec.names_only else serial)
    return tag(response, policy.INDEX, [cache_keys.INDEX_KEY])


def _xml(text: str) -> Response:
    response = Response(body=text.encode("utf-8"), content_type="text/xml", charset="utf-8")
    return tag(response, policy.INDEX, [cache_keys.INDEX_KEY])


def _fault(code: int, message: str) -> Response:
    return _xml(xmlrpc.client.dumps(xmlrpc.client.Fault(code, message), methodresponse=True))


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidParams(f"{what} must be a string, not {type(value).__name__}")
    return value


def _timestamp(iso: str) -> int:
    """The schema's ISO-8601 UTC text as seconds since the epoch."""
    return int(datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def _xml_int(value: int) -> int | float:
    """XML-RPC integers are 32-bit: a larger one (a file over 2 GiB) is sent as a double."""
    return int(value) if abs(int(value)) <= xmlrpc.client.MAXINT else float(value)


# -- the methods: each takes the services and the open transaction first ------


def _visibility(svc: Services, tx: Tx) -> access.Visibility:
    return viewer.visibility(svc, tx)


def _readable(svc: Services, tx: Tx, project: Any) -> Any:
    """The project if the caller may read it, else None (as if it did not exist)."""
    if not viewer.can_read(svc, tx, project):
        return None
    return project


def list_packages(svc: Services, tx: Tx) -> list[str]:
    return [p["name"] for p in _visibility(svc, tx).filter(packages.all_projects(tx))]


def list_packages_with_serial(svc: Services, tx: Tx) -> dict[str, int]:
    return {p["name"]: int(p["last_serial"]) for p in _visibility(svc, tx).filter(packages.all_projects(tx))}


def changelog_last_serial(svc: Services, tx: Tx) -> int:
    return journal.last_serial(tx)


def changelog_since_serial(svc: Services, tx: Tx, serial: int) -> list[tuple[str, str, int, str, int]]:
    """(name, version, timestamp, action, serial) of every change after ``serial``, oldest first."""
    if not isinstance(serial, int) or isinstance(serial, bool):
        raise InvalidParams(f"serial must be an integer, not {type(serial).__name__}")
    vis = _visibility(svc, tx)
    return [
        (row["name"], row["version"] or "", _timestamp(row["submitted_date"]), row["action"], int(row["id"]))
        for row in journal.since(tx, serial)
        if vis.shows(row["name"])
    ]


def package_releases(svc: Services, tx: Tx, name: str, show_hidden: bool = False) -> list[str]:
    """Every version, newest first, with show_hidden; otherwise only the latest (as pypi.org)."""
    project = _readable(svc, tx, packages.get_project(tx, _text(name, "package name")))
    if project is None:
        return []
    releases = packages.releases(tx, project["id"])
    if not show_hidden:
        latest = latest_release(releases)
        return [latest["version"]] if latest is not None else []
    return sorted((r["version"] for r in releases), key=packages.version_key, reverse=True)


def _release(svc: Services, tx: Tx, name: Any, version: Any) -> tuple[Any, Any]:
    project = _readable(svc, tx, packages.get_project(tx, _text(name, "package name")))
    if project is None:
        return None, None
    return project, packages.get_release(tx, project["id"], _text(version, "version"))


def release_urls(svc: Services, tx: Tx, name: str, version: str) -> list[dict[str, Any]]:
    """The files of one release, with their digests and download URLs."""
    project, release = _release(svc, tx, name, version)
    if release is None:
        return []
    urls = viewer.file_urls(svc, tx, project)
    files = []
    for f in packages.release_files(tx, release["id"]):
        info = file_info(f, json_api.absolute(svc, urls.file_url(f["path"])))
        # XML-RPC has no null: pypi.org sends "" where the JSON API sends null.
        info.update(
            path=f["path"],
            requires_python=info["requires_python"] or "",
            sha256_digest=f["sha256_digest"],
            size=_xml_int(f["size"]),
            yanked_reason=info["yanked_reason"] or "",
        )
        files.append(info)
    return files


def release_data(svc: Services, tx: Tx, name: str, version: str) -> dict[str, Any]:
    """One release's metadata in pypi.org's shape ({} when there is no such release)."""
    project, release = _release(svc, tx, name, version)
    if release is None:
        return {}
    urls = json.loads(release["project_urls"] or "{}")
    latest = latest_release(packages.releases(tx, project["id"]))
    base = svc.config.public_url
    return {
        "name": project["name"],
        "version": release["version"],
        "stable_version": latest["version"] if latest is not None else "",
        "summary": release["summary"],
        "description": release["description"],
        "description_content_type": release["description_content_type"],
        "author": release["author"],
        "author_email": release["author_email"],
        "maintainer": release["maintainer"],
        "maintainer_email": release["maintainer_email"],
        "license": release["license"],
        "license_expression": release["license_expression"],
        "license_files": json.loads(release["license_files"] or "[]"),
        "dynamic": json.loads(release["dynamic"] or "[]"),
        "keywords": release["keywords"],
        "home_page": release["home_page"],
        "download_url": release["download_url"],
        "platform": release["platform"],
        "requires_python": release["requires_python"],
        "classifiers": json.loads(release["classifiers"]),
        "requires_dist": json.loads(release["requires_dist"]),
        "provides_extra": json.loads(release["provides_extra"]),
        "project_urls": [f"{label}, {url}" for label, url in urls.items()],
        "package_url": f"{base}/project/{project['normalized_name']}/",
        "release_url": f"{base}/project/{project['normalized_name']}/{release['version']}/",
        "docs_url": "",
        "bugtrack_url": "",
        "downloads": {"last_day": -1, "last_week": -1, "last_month": -1},
        "yanked": bool(release["yanked"]),
        "yanked_reason": release["yanked_reason"],
        "_pypi_hidden": False,
    }


def list_methods(svc: Services, tx: Tx) -> list[str]:
    return sorted(METHODS)


METHODS: dict[str, Callable[..., Any]] = {
    "list_packages": list_packages,
    "list_packages_with_serial": list_packages_with_serial,
    "changelog_last_serial": changelog_last_serial,
    "changelog_since_serial": changelog_since_serial,
    "package_releases": package_releases,
    "release_urls": release_urls,
    "release_data": release_data,
    "system.listMethods": list_methods,
}
