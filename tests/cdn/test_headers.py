"""Every kind of response gets the cache policy's headers (WebTest, on both databases),
and with ``[cdn] files_url`` every file link names the CDN host."""

from __future__ import annotations

import json
import re

import pytest
import webtest

from pypi.app import make_app
from tests.conftest import basic, make_config
from tests.uploading import upload_wheel as upload

INDEX_CC = "max-age=600, public"
HTML_CC = "max-age=60, public"
SURROGATE = "max-age=86400, stale-while-revalidate=300, stale-if-error=86400"
PRIVATE = "private, no-store"
FILE_CC = "max-age=365000000, immutable, public"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"


@pytest.fixture
def demo(testapp, users, tmp_path):
    """The app with demo 1.0 and 1.1 uploaded by alice."""
    upload(testapp, tmp_path, "demo", "1.0")
    upload(testapp, tmp_path, "demo", "1.1")
    return testapp


def assert_no_surrogate(response):
    assert not [h for h in response.headers if h.lower().startswith("surrogate")]


def assert_index(response, key: str):
    assert response.headers["Cache-Control"] == INDEX_CC
    assert response.headers["Surrogate-Control"] == SURROGATE
    assert response.headers["Surrogate-Key"] == key
    assert int(response.headers["X-PyPI-Last-Serial"]) > 0
    assert response.headers["ETag"]


@pytest.mark.parametrize("accept", ["text/html", JSON_TYPE])
def test_simple_pages_are_index_kind_with_vary_accept(demo, accept):
    for path, key in [("/simple/", "index"), ("/simple/demo/", "project/demo")]:
        response = demo.get(path, headers={"Accept": accept})
        assert response.content_type == accept
        assert_index(response, key)
        assert response.headers["Vary"] == "Accept, Accept-Encoding"


@pytest.mark.parametrize("path", ["/simple/", "/simple/demo/", "/pypi/demo/json", "/pypi/demo/1.0/json"])
def test_etag_gives_304_with_the_same_caching_headers(demo, path):
    first = demo.get(path)
    again = demo.get(path, headers={"If-None-Match": first.headers["ETag"]}, status=304)
    assert again.body == b""
    for name in ("Cache-Control", "Surrogate-Control", "Surrogate-Key", "ETag"):
        assert again.headers[name] == first.headers[name]


def test_json_api_is_index_kind(demo):
    for path in ("/pypi/demo/json", "/pypi/demo/1.1/json"):
        response = demo.get(path)
        assert_index(response, "project/demo")
        assert response.json["last_serial"] == int(response.headers["X-PyPI-Last-Serial"])


def test_html_pages_are_html_kind(demo):
    home = demo.get("/")
    assert (home.headers["Cache-Control"], home.headers["Surrogate-Control"]) == (HTML_CC, SURROGATE)
    assert home.headers["Surrogate-Key"] == "recent index"
    page = demo.get("/project/demo/")
    assert (page.headers["Cache-Control"], page.headers["Surrogate-Key"]) == (HTML_CC, "project/demo")
    assert demo.get("/project/demo/1.0/").headers["Surrogate-Key"] == "project/demo"


@pytest.mark.parametrize("path", ["/simple/nothing-yet/", "/pypi/nothing-yet/json", "/project/nothing-yet/"])
def test_missing_project_is_briefly_cached_under_its_key(demo, path):
    response = demo.get(path, status=404)
    assert response.headers["Cache-Control"] == "max-age=60, public"
    assert response.headers["Surrogate-Control"] == "max-age=60"
    assert response.headers["Surrogate-Key"] == "project/nothing-yet"


def test_upload_responses_and_auth_errors_are_private(testapp, users, tmp_path):
    ok = upload(testapp, tmp_path, "demo", "1.0")
    assert ok.headers["Cache-Control"] == PRIVATE
    assert_no_surrogate(ok)
    unauthenticated = testapp.post("/legacy/", {":action": "file_upload"}, status=401)
    forbidden = testapp.post(
        "/legacy/", {":action": "file_upload"}, headers=basic("alice", "wrong"), status=403
    )
    not_owner = upload(testapp, tmp_path, "demo", "1.1", user="bob", status=403)
    for response in (unauthenticated, forbidden, not_owner):
        assert response.headers["Cache-Control"] == PRIVATE
        assert_no_surrogate(response)


def test_other_errors_are_private(demo):
    for response in (
        demo.get("/no/such/page", status=404),
        demo.get("/simple/demo/", headers={"Accept": "image/png"}, status=406),
        demo.put("/simple/", status=405),
    ):
        assert response.headers["Cache-Control"] == PRIVATE
        assert_no_surrogate(response)


def test_files_are_immutable_with_validators(demo):
    url = demo.get("/pypi/demo/1.0/json").json["urls"][0]["url"]
    path = re.sub(r"^https?://[^/]+", "", url)
    response = demo.get(path)
    assert response.headers["Cache-Control"] == FILE_CC
    assert response.headers["ETag"] and response.headers["Last-Modified"]
    assert_no_surrogate(response)
    assert demo.get(path, headers={"If-None-Match": response.headers["ETag"]}, status=304).body == b""
    metadata = demo.get(path + ".metadata")
    assert metadata.headers["Cache-Control"] == FILE_CC
    assert demo.get(path, headers={"Range": "bytes=0-9"}, status=206).body == response.body[:10]


def test_with_files_url_every_file_link_names_the_cdn(tmp_path, db_url, db, users):
    cdn = "https://files.example.org/packages/"
    config = make_config(tmp_path, db_url, cdn={"files_url": cdn})
    app = webtest.TestApp(make_app(config, db=db))
    upload(app, tmp_path, "demo", "1.0")
    upload(app, tmp_path, "demo", "1.1")

    html = app.get("/simple/demo/").text
    html_links = re.findall(r'href="([^"#]+)', html)
    simple_json = app.get("/simple/demo/", headers={"Accept": JSON_TYPE}).json
    api = app.get("/pypi/demo/json").json
    api_version = app.get("/pypi/demo/1.0/json").json
    page = app.get("/project/demo/").text
    page_links = [u for u in re.findall(r'href="([^"]+)"', page) if "/packages/" in u or u.endswith(".whl")]

    links = {
        "simple html": html_links,
        "simple json": [f["url"] for f in simple_json["files"]],
        "json api": [f["url"] for v in api["releases"].values() for f in v] + [f["url"] for f in api["urls"]],
        "json api version": [f["url"] for f in api_version["urls"]],
        "project page": page_links,
    }
    for where, urls in links.items():
        assert urls, where
        assert all(u.startswith(cdn) for u in urls), (where, urls)
    assert len(html_links) == 2
    # The rendered pages moved with the setting: nothing points back at this app's /packages/.
    assert "/packages/" not in json.dumps(api).replace(cdn, "")
