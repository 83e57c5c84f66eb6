"""The JSON API: /pypi/<name>/json and /pypi/<name>/<version>/json, in pypi.org's shape."""

from __future__ import annotations

import json

from packaging.utils import canonicalize_name
from webob import Request, Response

from cdn import policy
from cdn.urls import URLBuilder
from pypi import inline
from pypi.index import cache_keys, packages
from pypi.index.packages import latest_release
from pypi.services import Services
from pypi.views import viewer
from pypi.views.encoding import page_response
from pypi.views.file_info import file_info
from pypi.views.responses import error, redirect, tag
from pypi.views.simple import project_page

_DOWNLOADS = {"last_day": -1, "last_month": -1, "last_week": -1}


def absolute(svc: Services, url: str) -> str:
    """A root-relative link made absolute from the configured address (pypi.org's JSON has
    absolute URLs), never from the request's Host."""
    return svc.config.public_url + url if url.startswith("/") else url


def _file(svc: Services, urls: URLBuilder, f) -> dict:
    return file_info(f, absolute(svc, urls.file_url(f["path"])))


def _info(svc: Services, project, release) -> dict:
    base = svc.config.public_url
    name = project["normalized_name"]
    urls = json.loads(release["project_urls"] or "{}")
    if release["home_page"]:
        urls.setdefault("Homepage", release["home_page"])
    if release["download_url"]:
        urls.setdefault("Download", release["download_url"])
    return {
        "author": release["author"],
        "author_email": release["author_email"],
        "bugtrack_url": None,
        "classifiers": json.loads(release["classifiers"]),
        "description": release["description"],
        "description_content_type": release["description_content_type"] or None,
        "docs_url": None,
        "download_url": release["download_url"],
        "downloads": _DOWNLOADS,
        "dynamic": json.loads(release["dynamic"] or "[]") or None,
        "home_page": release["home_page"],
        "keywords": release["keywords"],
        "license": release["license"],
        "license_expression": release["license_expression"] or None,
        "license_files": json.loads(release["license_files"] or "[]") or None,
        "maintainer": release["maintainer"],
        "maintainer_email": release["maintainer_email"],
        "name": project["name"],
        "package_url": f"{base}/project/{name}/",
        "platform": release["platform"] or None,
        "project_url": f"{base}/project/{name}/",
        "project_urls": urls or None,
        "provides_extra": json.loads(release["provides_extra"]) or None,
        "release_url": f"{base}/project/{name}/{release['version']}/",
        "requires_dist": json.loads(release["requires_dist"]) or None,
        "requires_python": release["requires_python"] or None,
        "summary": release["summary"],
        "version": release["version"],
        "yanked": bool(release["yanked"]),
        "yanked_reason": release["yanked_reason"] or None,
    }


def _render(svc: Services, tx, project, version: str | None, urls: URLBuilder) -> bytes | None:
    releases = packages.releases(tx, project["id"])
    if version is None:
        release = latest_release(releases)
        if release is None:
            return None
        files = packages.project_files(tx, project["id"])
        by_release: dict[str, list] = {r["version"]: [] for r in releases}
        for f in files:
            by_release[f["version"]].append(_file(svc, urls, f))
        body = {
            "info": _info(svc, project, release),
            "last_serial": project["last_serial"],
            "releases": by_release,
            "urls": by_release[release["version"]],
            "vulnerabilities": [],
        }
    else:
        release = packages.get_release(tx, project["id"], version)
        if release is None:
            return None
        body = {
            "info": _info(svc, project, release),
            "last_serial": project["last_serial"],
            "urls": [_file(svc, urls, f) for f in packages.release_files(tx, release["id"])],
            "vulnerabilities": [],
        }
    return json.dumps(body).encode()


@inline.capable
@viewer.reads
def project_json(svc: Services, request: Request, name: str, version: str | None = None) -> Response:
    if svc.upstream is not None:  # the upstream may be asked: not in an event loop
        inline.require_thread(request.environ)
    normalized = canonicalize_name(name)
    key = cache_keys.project_key(normalized)
    upstream = viewer.upstream_answer(svc, normalized)
    if upstream.error is not None:
        return upstream.error
    if svc.upstream is not None and upstream.proxied:
        svc.upstream.describe(normalized)
    with svc.db.reading() as tx:
        project = packages.get_project(tx, normalized)
        if not viewer.can_read(svc, tx, project):
            return error(404, "Not Found", kind=policy.MISSING, keys=[key])
        if name != project["normalized_name"] and name != project["name"]:
            suffix = f"{version}/json" if version else "json"
            return redirect(f"/pypi/{project['normalized_name']}/{suffix}", keys=[key])
        serial = project["last_serial"]
        urls = viewer.file_urls(svc, tx, project)
        page = project_page(
            svc,
            tx,
            f"json/{normalized}/{version or ''}",
            serial,
            lambda: _render(svc, tx, project, version, urls),
            base=urls.base,
            cached_only=inline.active(request.environ),
        )
    if page is None:
        return error(404, "Not Found", kind=policy.MISSING, keys=[key])
    response = page_response(request, page, "application/json")
    response.headers["X-PyPI-Last-Serial"] = str(serial)
    response.headers["Access-Control-Allow-Origin"] = "*"
    tag(response, policy.INDEX, [key])
    return upstream.decorate(response)
