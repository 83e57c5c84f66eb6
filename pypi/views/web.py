"""HTML pages: the home page (recent uploads, search) and project and release pages."""

from __future__ import annotations

import json

from jinja2 import Environment, PackageLoader, select_autoescape
from packaging.utils import canonicalize_name
from webob import Request, Response

from cdn import policy
from pypi.index import access, cache_keys, journal, packages
from pypi.index.packages import latest_release
from pypi.services import Services
from pypi.views import viewer
from pypi.views.readme import render_description
from pypi.views.responses import error, redirect, tag

_env = Environment(
    loader=PackageLoader("pypi", "templates"),
    autoescape=select_autoescape(["html"]),
    auto_reload=False,
)


def _page(svc: Services, template: str, keys: list[str], **values) -> Response:
    body = _env.get_template(template).render(site_name=svc.config.webui.site_name, **values)
    response = Response(body=body.encode("utf-8"), content_type="text/html", charset="utf-8")
    return tag(response, policy.HTML, keys)


@viewer.reads
def home(svc: Services, request: Request) -> Response:
    query = request.GET.get("q", "").strip()[:100]
    with svc.db.transaction() as tx:
        vis = viewer.visibility(svc, tx)
        if query:
            return _page(
                svc,
                "index.html",
                [cache_keys.INDEX_KEY],
                query=query,
                results=vis.filter(packages.search_projects(tx, query, 100 + len(vis.hidden)))[:100],
                index_url=svc.config.public_url + "/simple/",
            )
        serial = journal.last_serial(tx)
        body = svc.renders.get_or_render(
            ("home", serial, vis.key),
            lambda: _env.get_template("index.html").render(
                site_name=svc.config.webui.site_name,
                counts=access.counts(tx, vis, packages.index_counts(tx)),
                recent=vis.filter(packages.recent_releases(tx, 20 + len(vis.hidden)))[:20],
                index_url=svc.config.public_url + "/simple/",
            ),
        )
    response = Response(body=body.encode("utf-8"), content_type="text/html", charset="utf-8")
    return tag(response, policy.HTML, [cache_keys.RECENT_KEY, cache_keys.INDEX_KEY])


@viewer.reads
def project(svc: Services, request: Request, name: str, version: str | None = None) -> Response:
    normalized = canonicalize_name(name)
    key = cache_keys.project_key(normalized)
    if name != normalized or not request.path_info.endswith("/"):
        return redirect(f"/project/{normalized}/" + (f"{version}/" if version else ""), keys=[key])
    with svc.db.transaction() as tx:
        row = packages.get_project(tx, normalized)
        if not viewer.can_read(svc, tx, row):
            return error(404, f"Not Found: no project named {name!r}", kind=policy.MISSING, keys=[key])
        releases = packages.releases(tx, row["id"])
        release = packages.get_release(tx, row["id"], version) if version else latest_release(releases)
        if release is None:
            return error(404, "Not Found: no such release", kind=policy.MISSING, keys=[key])
        urls = viewer.file_urls(svc, tx, row)
        body = svc.renders.get_or_render(
            ("project-page", normalized, release["version"], row["last_serial"], urls.base),
            lambda: _render_release(
                svc, row, release, releases, packages.release_files(tx, release["id"]), urls
            ),
        )
    response = Response(body=body.encode("utf-8"), content_type="text/html", charset="utf-8")
    return tag(response, policy.HTML, [key])


def _render_release(svc: Services, row, release, releases, files, file_urls) -> str:
    urls = list(json.loads(release["project_urls"] or "{}").items())
    if release["home_page"]:
        urls.insert(0, ("Homepage", release["home_page"]))
    urls = [(label, url) for label, url in urls if url.startswith(("https://", "http://"))]
    return _env.get_template("release.html").render(
        site_name=svc.config.webui.site_name,
        project=row,
        release=release,
        releases=list(reversed(releases)),
        files=[dict(f, url=file_urls.file_url(f["path"])) for f in files],
        urls=urls,
        license_files=json.loads(release["license_files"] or "[]"),
        dynamic=json.loads(release["dynamic"] or "[]"),
        description=render_description(release["description"], release["description_content_type"]),
    )
