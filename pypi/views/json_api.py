"""The JSON API: /pypi/<name>/json and /pypi/<name>/<version>/json, in pypi.org's shape."""

from __future__ import annotations

import json

from packaging.utils import canonicalize_name
from webob import Request, Response

from cdn import policy
from pypi.index import cache_keys, packages
from pypi.index.packages import latest_release
from pypi.services import Services
from pypi.views.encoding import page_response
from pypi.views.responses import error, redirect, tag
from pypi.views.simple import project_page

_DOWNLOADS = {"last_day": -1, "last_month": -1, "last_week": -1}


def _file(svc: Services, f) -> dict:
    upload_time = f["upload_time"]
    return {
        "comment_text": f["comment_text"] or "",
        "digests": {
            "blake2b_256": f["blake2_256_digest"],
            "md5": f["md5_digest"],
            "sha256": f["sha256_digest"],
        },
        "downloads": -1,
        "filename": f["filename"],
        "has_sig": False,
        "md5_digest": f["md5_digest"],
        "packagetype": f["packagetype"],
        "python_version": f["python_version"],
        "requires_python": f["requires_python"] or None,
        "size": f["size"],
        "upload_time": upload_time[:19],
        "upload_time_iso_8601": upload_time,
        "url": svc.urls.file_url(f["path"]),
        "yanked": bool(f["yanked"]),
        "yanked_reason": f["yanked_reason"] or None,
    }


def _info(svc: Services, project, release) -> dict:
    base = svc.config.webui.url
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
        "dynamic": None,
        "home_page": release["home_page"],
        "keywords": release["keywords"],
        "license": release["license"],
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


def _render(svc: Services, tx, project, version: str | None) -> bytes | None:
    releases = packages.releases(tx, project["id"])
    if version is None:
        release = latest_release(releases)
        if release is None:
            return None
        files = packages.project_files(tx, project["id"])
        by_release: dict[str, list] = {r["version"]: [] for r in releases}
        for f in files:
            by_release[f["version"]].append(_file(svc, f))
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
            "urls": [_file(svc, f) for f in packages.release_files(tx, release["id"])],
            "vulnerabilities": [],
        }
    return json.dumps(body).encode()


def project_json(svc: Services, request: Request, name: str, version: str | None = None) -> Response:
    normalized = canonicalize_name(name)
    key = cache_keys.project_key(normalized)
    with svc.db.reading() as tx:
        project = packages.get_project(tx, normalized)
        if project is None:
            return error(404, "Not Found", kind=policy.MISSING, keys=[key])
        if name != project["normalized_name"] and name != project["name"]:
            suffix = f"{version}/json" if version else "json"
            return redirect(f"/pypi/{project['normalized_name']}/{suffix}", keys=[key])
        serial = project["last_serial"]
        page = project_page(
            svc, tx, f"json/{normalized}/{version or ''}", serial, lambda: _render(svc, tx, project, version)
        )
    if page is None:
        return error(404, "Not Found", kind=policy.MISSING, keys=[key])
    response = page_response(request, page, "application/json")
    response.headers["X-PyPI-Last-Serial"] = str(serial)
    response.headers["Access-Control-Allow-Origin"] = "*"
    return tag(response, policy.INDEX, [key])
