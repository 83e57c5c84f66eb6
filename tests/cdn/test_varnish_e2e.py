"""End to end: a real Varnish with the shipped VCL in front of a live ``cloudpypi serve``
(``[cdn] purge = varnish``, ``files_url`` on the Varnish), with twine and pip as clients.

"Reached the application" is measured by Varnish's own counter of backend
requests (``MAIN.backend_req`` from varnishstat).
"""

from __future__ import annotations

import http.client
from dataclasses import dataclass
from pathlib import Path

import pytest

from cdn.purgers.varnish import VarnishPurger
from pypi.index.db import Database
from pypi.operations.purge_worker import pending
from tests.dists import make_wheel
from tests.e2e.clients import client_env, fresh_venv, run, twine_upload
from tests.services.live_server import (
    LiveServer,
    cloudpypi,
    free_port,
    start_server,
    wait_for,
    write_config,
)
from tests.services.varnish import Varnish

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery"
#: How soon a change must show through the CDN.
FRESH_WITHIN = 2.0


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    text: str

    @property
    def cache(self) -> str:
        return self.headers.get("X-Cache", "")


@dataclass
class Stack:
    app: LiveServer
    varnish: Varnish
    config: str
    db_url: str
    dists: Path

    def get(
        self, path: str, *, method: str = "GET", headers: dict | None = None, source: str | None = None
    ) -> Response:
        """A request to Varnish, from 127.0.0.1 or ``source``; never raises on a 4xx/5xx."""
        source_address = (source, 0) if source else None
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.varnish.port, timeout=30, source_address=source_address
        )
        try:
            conn.request(method, path, headers=headers or {})
            r = conn.getresponse()
            return Response(r.status, r.headers, r.read().decode("utf-8", "replace"))
        finally:
            conn.close()

    def upload(self, name: str, version: str, *, direct: bool = False) -> None:
        """``twine upload`` of a fresh wheel, through Varnish (or ``direct`` to the application)."""
        folder = self.dists / f"{name}-{version}"
        folder.mkdir(parents=True, exist_ok=True)
        wheel = make_wheel(str(folder), name, version)
        base = self.app.url if direct else self.varnish.url
        twine_upload(f"{base}/legacy/", wheel, home=folder, password=PASSWORD, check=True)

    def outbox(self) -> list[dict]:
        db = Database(self.db_url)
        try:
            return pending(db)
        finally:
            db.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, varnish_factory):
    tmp = tmp_path_factory.mktemp("cdn-e2e")
    vport = free_port()
    db_url = f"sqlite:///{tmp}/cloudpypi.sqlite3"
    config = write_config(
        str(tmp / "config.ini"),
        {
            "server": {"data_dir": str(tmp / "data")},
            "database": {"url": db_url},
            "cdn": {
                "files_url": f"http://127.0.0.1:{vport}/packages/",
                "purge": "varnish",
                "varnish_urls": f"http://127.0.0.1:{vport}/",
                "purge_timeout": "2",
                "purge_retry_max": "1",
            },
        },
    )
    cloudpypi("adduser", "alice", "--password", PASSWORD, config=config)
    app = start_server(config)
    try:
        varnish = varnish_factory("127.0.0.1", int(app.url.rsplit(":", 1)[1]), port=vport)
        yield Stack(app, varnish, config, db_url, tmp / "dists")
    finally:
        app.stop()


def test_pip_installs_through_varnish_and_files_are_cached_immutable(stack, tmp_path):
    stack.upload("cdn-pip-demo", "1.0")
    python = fresh_venv(tmp_path / "venv")
    env = client_env(home=tmp_path)
    out = run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            "--index-url",
            f"{stack.varnish.url}/simple/",
            "cdn-pip-demo",
        ],
        env=env,
    ).stdout
    assert "successfully installed cdn-pip-demo-1.0" in out.lower(), out
    version = run([python, "-c", "import cdn_pip_demo; print(cdn_pip_demo.VERSION)"], env=env)
    assert version.stdout.strip() == "1.0"

    page = stack.get("/simple/cdn-pip-demo/").text
    link = page.split('href="', 1)[1].split("#", 1)[0]
    assert link.startswith(f"{stack.varnish.url}/packages/")  # the CDN host
    path = link[len(stack.varnish.url) :]
    first, second = stack.get(path), stack.get(path)
    assert second.cache == "HIT"  # pip already fetched it through Varnish, or the first GET did
    for r in (first, second):
        assert r.status == 200
        assert r.headers["Cache-Control"] == "max-age=365000000, immutable, public"


def test_a_second_request_is_a_hit_that_never_reaches_the_app(stack):
    stack.upload("cdn-hit", "1.0")
    first = stack.get("/simple/cdn-hit/")
    assert first.status == 200 and "cdn_hit-1.0" in first.text
    before = stack.varnish.backend_requests()
    again = [stack.get("/simple/cdn-hit/") for _ in range(5)]
    assert [r.cache for r in again] == ["HIT"] * 5
    assert stack.varnish.backend_requests() == before
    for r in (first, *again):
        assert not [h for h in r.headers if h.lower().startswith(("surrogate", "xkey"))]
        assert r.headers["Cache-Control"] == "max-age=600, public"


def test_a_new_version_shows_within_two_seconds(stack):
    stack.upload("cdn-fresh", "1.0")
    stack.get("/simple/cdn-fresh/")
    stack.get("/pypi/cdn-fresh/json")
    assert stack.get("/simple/cdn-fresh/").cache == "HIT"
    assert stack.get("/pypi/cdn-fresh/json").cache == "HIT"
    stack.upload("cdn-fresh", "1.1")
    took = wait_for(lambda: "cdn_fresh-1.1" in stack.get("/simple/cdn-fresh/").text, FRESH_WITHIN)
    assert took < FRESH_WITHIN
    wait_for(lambda: '"1.1"' in stack.get("/pypi/cdn-fresh/json").text, FRESH_WITHIN)


def test_a_new_project_shows_in_the_index_and_its_cached_404_within_two_seconds(stack):
    assert stack.get("/simple/cdn-brand-new/").status == 404
    cached_404 = stack.get("/simple/cdn-brand-new/")
    assert (cached_404.status, cached_404.cache) == (404, "HIT")
    stack.get("/simple/")
    assert stack.get("/simple/").cache == "HIT"
    stack.upload("cdn-brand-new", "1.0")
    wait_for(lambda: stack.get("/simple/cdn-brand-new/").status == 200, FRESH_WITHIN)
    wait_for(lambda: "/simple/cdn-brand-new/" in stack.get("/simple/").text, FRESH_WITHIN)


def test_authenticated_and_error_responses_are_never_cached(stack):
    auth = {"Authorization": "Basic YWxpY2U6d3Jvbmc="}  # alice:wrong
    cases = [
        ("GET", "/simple/", auth),  # a request with credentials
        ("POST", "/legacy/", auth),  # 403 after auth
        ("POST", "/legacy/", {}),  # 401
        ("GET", "/no/such/page", {}),  # 404 of no project: private
        ("GET", "/simple/?format=nonsense", {}),  # 406
    ]
    for method, path, headers in cases:
        responses = [stack.get(path, method=method, headers=headers) for _ in range(3)]
        assert [r.cache for r in responses] == ["PASS"] * 3, (method, path)
        assert not [h for r in responses for h in r.headers if h.lower().startswith(("surrogate", "xkey"))]
    denied = stack.get("/legacy/", method="POST", headers=auth)
    assert denied.status == 403 and denied.headers["Cache-Control"] == "private, no-store"


def test_purge_and_ban_only_from_the_acl(stack):
    refused = stack.get("/", method="PURGE", headers={"xkey": "index"}, source="127.0.0.2")
    assert refused.status == 403
    assert stack.get("/", method="BAN", headers={"xkey": "index"}, source="127.0.0.2").status == 403
    assert stack.get("/", method="PURGE", headers={"xkey": "index"}).status == 200


def test_ban_and_soft_purge_through_the_purger(stack):
    stack.upload("cdn-ban", "1.0")
    stack.get("/simple/cdn-ban/")
    assert stack.get("/simple/cdn-ban/").cache == "HIT"
    ban = VarnishPurger(urls=[stack.varnish.url], method="ban")
    ban.purge(["project/cdn-ba", "project/cdn-ban-x"], [])  # whole keys only: not this page
    assert stack.get("/simple/cdn-ban/").cache == "HIT"
    ban.purge(["project/cdn-ban"], [])
    assert stack.get("/simple/cdn-ban/").cache == "MISS"
    assert stack.get("/simple/cdn-ban/").cache == "HIT"
    # A soft purge keeps serving the stale page while it fetches a fresh one.
    before = stack.varnish.backend_requests()
    VarnishPurger(urls=[stack.varnish.url], soft=True).purge(["project/cdn-ban"], [])
    assert stack.get("/simple/cdn-ban/").cache == "HIT"
    wait_for(lambda: stack.varnish.backend_requests() > before, 5)


def test_uploads_succeed_while_varnish_is_down_and_purges_go_out_when_it_is_back(stack):
    stack.upload("cdn-outage", "1.0")
    stack.varnish.stop()
    stack.upload("cdn-outage", "1.1", direct=True)  # the CDN is down
    wait_for(lambda: any(r["attempts"] >= 1 for r in stack.outbox()), 10)
    rows = stack.outbox()
    assert {"project/cdn-outage", "recent"} <= {r["purge_key"] for r in rows}
    assert all(r["last_error"] for r in rows if r["attempts"])
    status = cloudpypi("purge", "--status", "--fail-after", "1000", config=stack.config)
    assert "project/cdn-outage" in status.stdout and "PURGE http://127.0.0.1" in status.stdout
    failing = cloudpypi("purge", "--status", "--fail-after", "1", config=stack.config, check=False)
    assert failing.returncode == 1

    stack.varnish.start()  # same port, empty cache
    wait_for(lambda: stack.outbox() == [], 15)
    status = cloudpypi("purge", "--status", config=stack.config)
    assert "no purges pending" in status.stdout
    assert "cdn_outage-1.1" in stack.get("/simple/cdn-outage/").text
