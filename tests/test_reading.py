"""The read side: simple index (PEP 503/691), JSON API, files, HTML pages."""

from __future__ import annotations

import json
import re

import pytest

from tests.dists import digests, make_sdist, make_wheel
from tests.uploading import upload

JSON = "application/vnd.pypi.simple.v1+json"


@pytest.fixture
def published(testapp, db, users, tmp_path):
    """Demo.Pkg 1.0 (wheel with Requires-Python + sdist) and 2.0rc1 (wheel), uploaded by alice."""
    w1 = make_wheel(str(tmp_path), "Demo.Pkg", "1.0", requires_python=">=3.8")
    s1 = make_sdist(str(tmp_path), "Demo.Pkg", "1.0")
    w2 = make_wheel(str(tmp_path), "Demo.Pkg", "2.0rc1")
    upload(
        testapp,
        w1,
        name="Demo.Pkg",
        version="1.0",
        requires_python=">=3.8",
        description="# Hello\n\n<script>alert(1)</script> *world*",
        description_content_type="text/markdown",
    )
    upload(testapp, s1, name="Demo.Pkg", version="1.0")
    upload(testapp, w2, name="Demo.Pkg", version="2.0rc1")
    return {"w1": w1, "s1": s1, "w2": w2}


def file_url(testapp, filename):
    r = testapp.get("/simple/demo-pkg/", headers={"Accept": JSON})
    return next(f["url"] for f in r.json["files"] if f["filename"] == filename)


def test_simple_index_html(testapp, published):
    r = testapp.get("/simple/")
    assert r.content_type == "text/html"
    assert '<a href="/simple/demo-pkg/">Demo.Pkg</a>' in r.text
    assert r.headers["X-PyPI-Last-Serial"].isdigit()
    assert r.headers["Vary"] == "Accept, Accept-Encoding"


def test_simple_index_json(testapp, published):
    r = testapp.get("/simple/", headers={"Accept": JSON})
    assert r.content_type == JSON
    assert r.json["meta"]["api-version"] == "1.1"
    assert [p["name"] for p in r.json["projects"]] == ["Demo.Pkg"]


def test_simple_project_html(testapp, published):
    r = testapp.get("/simple/demo-pkg/")
    sha = digests(published["w1"])["sha256_digest"]
    assert f"#sha256={sha}" in r.text
    assert 'data-requires-python="&gt;=3.8"' in r.text
    assert 'data-core-metadata="sha256=' in r.text
    assert "demo_pkg-1.0.tar.gz" in r.text
    assert int(r.headers["X-PyPI-Last-Serial"]) > 0


def test_simple_project_json_pep691_700(testapp, published):
    r = testapp.get("/simple/demo-pkg/", headers={"Accept": JSON})
    body = r.json
    assert body["name"] == "demo-pkg"
    assert body["versions"] == ["1.0", "2.0rc1"]
    files = {f["filename"]: f for f in body["files"]}
    w1 = files["demo_pkg-1.0-py3-none-any.whl"]
    assert w1["hashes"]["sha256"] == digests(published["w1"])["sha256_digest"]
    assert w1["requires-python"] == ">=3.8"
    assert w1["yanked"] is False
    assert w1["core-metadata"]["sha256"]
    assert w1["size"] > 0 and w1["upload-time"].endswith("Z")
    assert files["demo_pkg-1.0.tar.gz"]["core-metadata"] is False


def test_core_metadata_hash_matches_served_file(testapp, published):
    r = testapp.get("/simple/demo-pkg/", headers={"Accept": JSON})
    w1 = next(f for f in r.json["files"] if f["filename"].endswith(".whl"))
    meta = testapp.get(w1["url"] + ".metadata")
    import hashlib

    assert hashlib.sha256(meta.body).hexdigest() == w1["core-metadata"]["sha256"]


def test_yanked_release_is_marked(testapp, db, published):
    with db.transaction(write=True) as tx:
        tx.execute("UPDATE releases SET yanked = 1, yanked_reason = 'broken' WHERE version = '2.0rc1'")
        tx.execute("UPDATE projects SET last_serial = last_serial + 1000")
    html = testapp.get("/simple/demo-pkg/").text
    link = next(line for line in html.splitlines() if "demo_pkg-2.0rc1-py3-none-any.whl<" in line)
    assert 'data-yanked="broken"' in link
    js = testapp.get("/simple/demo-pkg/", headers={"Accept": JSON}).json
    assert {f["filename"]: f["yanked"] for f in js["files"]}["demo_pkg-2.0rc1-py3-none-any.whl"] == "broken"


@pytest.mark.parametrize(
    "accept, expected",
    [
        (None, "text/html"),
        ("*/*", "text/html"),
        ("text/html", "text/html"),
        ("application/vnd.pypi.simple.v1+html", "application/vnd.pypi.simple.v1+html"),
        (f"{JSON}, application/vnd.pypi.simple.v1+html;q=0.1, text/html;q=0.01", JSON),
    ],
)
def test_content_negotiation(testapp, published, accept, expected):
    r = testapp.get("/simple/demo-pkg/", headers={"Accept": accept} if accept else {})
    assert r.content_type == expected


def test_unacceptable_format_406(testapp, published):
    testapp.get("/simple/demo-pkg/", headers={"Accept": "application/xml"}, status=406)
    testapp.get("/simple/demo-pkg/?format=application/xml", status=406)
    assert testapp.get("/simple/demo-pkg/?format=" + JSON.replace("+", "%2B")).content_type == JSON


@pytest.mark.parametrize("path", ["/simple/Demo.Pkg/", "/simple/DEMO_pkg/", "/simple/demo.pkg"])
def test_non_normalized_names_redirect(testapp, published, path):
    r = testapp.get(path, status=301)
    assert r.location.endswith("/simple/demo-pkg/")


def test_missing_project_404(testapp, published):
    r = testapp.get("/simple/nope/", status=404)
    assert "nope" in r.text


def test_serial_moves_with_each_upload_and_page_updates(testapp, users, published, tmp_path):
    first = testapp.get("/simple/demo-pkg/")
    w3 = make_wheel(str(tmp_path), "Demo.Pkg", "3.0")
    upload(testapp, w3, name="Demo.Pkg", version="3.0")
    second = testapp.get("/simple/demo-pkg/")
    assert int(second.headers["X-PyPI-Last-Serial"]) > int(first.headers["X-PyPI-Last-Serial"])
    assert "demo_pkg-3.0-py3-none-any.whl" in second.text
    assert first.etag != second.etag


def test_etag_304(testapp, published):
    r = testapp.get("/simple/demo-pkg/")
    assert r.etag
    r2 = testapp.get("/simple/demo-pkg/", headers={"If-None-Match": f'"{r.etag}"'}, status=304)
    assert r2.body == b""


def test_json_api_shape(testapp, published):
    r = testapp.get("/pypi/demo-pkg/json")
    body = r.json
    assert set(body) == {"info", "last_serial", "releases", "urls", "vulnerabilities"}
    # the newest stable release, not the release candidate
    assert body["info"]["version"] == "1.0"
    assert body["info"]["name"] == "Demo.Pkg"
    assert body["info"]["requires_python"] == ">=3.8"
    assert set(body["releases"]) == {"1.0", "2.0rc1"}
    f = next(u for u in body["urls"] if u["packagetype"] == "bdist_wheel")
    d = digests(published["w1"])
    assert f["digests"] == {
        "md5": d["md5_digest"],
        "sha256": d["sha256_digest"],
        "blake2b_256": d["blake2_256_digest"],
    }
    assert f["size"] > 0 and f["upload_time_iso_8601"].endswith("Z") and len(f["upload_time"]) == 19
    assert f["url"].startswith("http://127.0.0.1:8080/packages/")  # absolute, from serve's address


def test_json_api_version(testapp, published):
    body = testapp.get("/pypi/demo-pkg/2.0rc1/json").json
    assert body["info"]["version"] == "2.0rc1"
    assert [u["filename"] for u in body["urls"]] == ["demo_pkg-2.0rc1-py3-none-any.whl"]
    testapp.get("/pypi/demo-pkg/9.9/json", status=404)
    testapp.get("/pypi/nope/json", status=404)


def test_files_served_with_validators_and_ranges(testapp, published):
    url = file_url(testapp, "demo_pkg-1.0-py3-none-any.whl")
    data = open(published["w1"], "rb").read()
    r = testapp.get(url)
    assert r.body == data
    assert r.headers["Cache-Control"] == "max-age=365000000, immutable, public"
    assert r.etag and r.last_modified and r.headers["Accept-Ranges"] == "bytes"
    testapp.get(url, headers={"If-None-Match": f'"{r.etag}"'}, status=304)
    testapp.get(url, headers={"If-Modified-Since": r.headers["Last-Modified"]}, status=304)
    part = testapp.get(url, headers={"Range": "bytes=10-19"}, status=206)
    assert part.body == data[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    testapp.get(url, headers={"Range": f"bytes={len(data) + 10}-"}, status=416)
    head = testapp.head(url)
    assert head.headers["Content-Length"] == str(len(data)) and head.body == b""


@pytest.mark.parametrize(
    "path",
    [
        "/packages/../../etc/passwd",
        "/packages/%2e%2e/%2e%2e/etc/passwd",
        "/packages/..%2f..%2fetc%2fpasswd",
        "/packages/aa/../../cloudpypi.sqlite3",
        "/packages//etc/passwd",
        "/packages/nothing/here.whl",
    ],
)
def test_no_path_traversal(testapp, published, path):
    r = testapp.get(path, expect_errors=True)
    assert r.status_int in (404, 400)
    assert b"root:" not in r.body and b"SQLite" not in r.body


def test_project_page_renders_description_escaped(testapp, published):
    r = testapp.get("/project/demo-pkg/")
    assert re.search(r"<h1[^>]*>\s*Hello", r.text.split('class="description"')[1]), r.text
    assert "<script>alert(1)</script>" not in r.text
    assert "demo_pkg-1.0-py3-none-any.whl" in r.text
    assert testapp.get("/project/demo-pkg/2.0rc1/").status_int == 200
    assert testapp.get("/project/Demo.Pkg/", status=301).location.endswith("/project/demo-pkg/")
    testapp.get("/project/demo-pkg/7.0/", status=404)


def test_home_recent_and_search(testapp, published):
    r = testapp.get("/")
    assert "Demo.Pkg" in r.text and "2.0rc1" in r.text
    found = testapp.get("/?q=demo")
    assert "/project/demo-pkg/" in found.text
    miss = testapp.get("/?q=%3Cscript%3E")
    assert "<script>" not in miss.text and "&lt;script&gt;" in miss.text


def test_unknown_route_and_method(testapp):
    testapp.get("/nothing/here", status=404)
    r = testapp.delete("/simple/", status=405)
    assert "GET" in r.headers["Allow"]


def test_json_api_links_use_cdn_files_url(tmp_path, db_url, users_db=None):
    import webtest

    from pypi.app import make_app
    from pypi.index import auth
    from pypi.index.db import Database
    from tests.conftest import PASSWORD, make_config

    config = make_config(tmp_path, db_url, cdn={"files_url": "https://files.example.org/packages/"})
    db = Database(config.database.url)
    with db.transaction(write=True) as tx:
        auth.create_user(tx, "alice", PASSWORD)
    testapp = webtest.TestApp(make_app(config, db=db))
    w = make_wheel(str(tmp_path), "demo", "1.0")
    upload(testapp, w, name="demo", version="1.0")
    urls = [f["url"] for f in testapp.get("/pypi/demo/json").json["urls"]]
    urls += [f["url"] for f in testapp.get("/simple/demo/", headers={"Accept": JSON}).json["files"]]
    assert urls and all(u.startswith("https://files.example.org/packages/") for u in urls)
    assert 'href="https://files.example.org/packages/' in testapp.get("/simple/demo/").text
    assert "https://files.example.org/packages/" in testapp.get("/project/demo/").text
    json.dumps(urls)
    db.close()
