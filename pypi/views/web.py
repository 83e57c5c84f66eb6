"""HTML pages: the home page (recent uploads, search) and project and release pages."""

from __future__ import annotations

import json

from jinja2 import Environment, PackageLoader, select_autoescape
from packaging.utils import canonicalize_name
from webob import Request, Response

from cdn import policy
from pypi.index import cache_keys, journal, packages
from pypi.index.packages import latest_release
from pypi.services import Services
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


def home(svc: Services, request: Request) -> Response:
    query = request.GET.get("q", "").strip()[:100]
    with svc.db.transaction() as tx:
        if query:
            return _page(
                svc,
                "index.html",
                [cache_keys.INDEX_KEY],
                query=query,
                results=packages.search_projects(tx, query),
            )
        serial = journal.last_serial(tx)
        body = svc.renders.get_or_render(
            ("home", serial),
            lambda: _env.get_template("index.html").render(
                site_name=svc.config.webui.site_name,
                counts=packages.index_counts(tx),
                recent=packages.recent_releases(tx),
                index_url=(svc.config.webui.url or request.host_url) + "/simple/",
            ),
        )
    response = Response(body=body.encode("utf-8"), content_type="text/html", charset="utf-8")
    return tag(response, policy.HTML, [cache_keys.RECENT_KEY, cache_keys.INDEX_KEY])


def project(svc: Services, request: Request, name: str, version: str | None = None) -> Response:
    normalized = canonicalize_name(name)
    key = cache_keys.project_key(normalized)
    if name != normalized or not request.path_info.endswith("/"):
        return redirect(f"/project/{normalized}/" + (f"{version}/" if version else ""), keys=[key])
    with svc.db.transaction() as tx:
        row = packages.get_project(tx, normalized)
        if row is None:
            return error(404, f"Not Found: no project named {name!r}", kind=policy.MISSING, keys=[key])
        releases = packages.releases(tx, row["id"])
        release = packages.get_release(tx, row["id"], version) if version else latest_release(releases)
        if release is None:
            return error(404, "Not Found: no such release", kind=policy.MISSING, keys=[key])
        body = svc.renders.get_or_render(
            ("project-page", normalized, release["version"], row["last_serial"], svc.urls.base),
            lambda: _render_release(svc, row, release, releases, packages.release_files(tx, release["id"])),
        )
    response = Response(body=body.encode("utf-8"), content_type="text/html", charset="utf-8")
    return tag(response, policy.HTML, [key])


def _render_release(svc: Services, row, release, releases, files) -> str:
    urls = list(json.loads(release["project_urls"] or "{}").items())
    if release["home_page"]:
        urls.insert(0, ("Homepage", release["home_page"]))
    urls = [(label, url) for label, url in urls if url.startswith(("https://", "http://"))]
    return _env.get_template("release.html").render(
        site_name=svc.config.webui.site_name,
        project=row,
        release=release,
        releases=list(reversed(releases)),
        files=[dict(f, url=svc.urls.file_url(f["path"])) for f in files],
        urls=urls,
        description=render_description(release["description"], release["description_content_type"]),
    )
