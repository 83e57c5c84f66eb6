"""``[storage] serve = proxy | redirect`` for /packages/, on S3 (moto's server)."""

from __future__ import annotations

import urllib.request

import pytest
import webtest

from pypi.app import make_app
from tests.backends import s3_moto_section
from tests.conftest import make_config
from tests.dists import make_wheel
from tests.uploading import upload


def s3_app(tmp_path, db, moto, bucket, **storage):
    config = make_config(tmp_path, db.url, storage=s3_moto_section(moto, bucket, **storage))
    return webtest.TestApp(make_app(config, db=db))


@pytest.fixture
def wheel(tmp_path):
    path = make_wheel(str(tmp_path), "served", "1.0", extra_bytes=50_000)
    with open(path, "rb") as f:
        return path, f.read()


def published_path(app, wheel) -> str:
    upload(app, wheel[0], name="served", version="1.0")
    files = app.get("/simple/served/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}).json
    url = files["files"][0]["url"]
    return url[url.index("/packages/") :].split("#")[0]


def test_redirect_sends_clients_to_the_bucket(tmp_path, db, users, moto_s3, moto_s3_bucket, wheel):
    public = f"{moto_s3.endpoint_url}/{moto_s3_bucket}"
    app = s3_app(
        tmp_path,
        db,
        moto_s3,
        moto_s3_bucket,
        serve="redirect",
        public_url=public,
        prefix="idx",
        acl="public-read",
    )
    path = published_path(app, wheel)

    r = app.get(path, status=302)
    assert r.location == f"{public}/idx{path}"
    assert "immutable" in r.headers["Cache-Control"]
    with urllib.request.urlopen(r.location) as direct:  # public-read: no signature needed
        assert direct.read() == wheel[1]
        assert direct.headers["Cache-Control"] == "max-age=365000000, immutable, public"
    r = app.get(path + ".metadata", status=302)
    assert r.location == f"{public}/idx{path}.metadata"


def test_redirect_without_a_public_url_streams_instead(tmp_path, db, users, moto_s3, moto_s3_bucket, wheel):
    app = s3_app(tmp_path, db, moto_s3, moto_s3_bucket, serve="redirect")
    path = published_path(app, wheel)
    assert app.get(path, status=200).body == wheel[1]


def test_proxy_streams_with_validators_and_ranges(tmp_path, db, users, moto_s3, moto_s3_bucket, wheel):
    public = f"{moto_s3.endpoint_url}/{moto_s3_bucket}"
    app = s3_app(tmp_path, db, moto_s3, moto_s3_bucket, serve="proxy", public_url=public)
    path = published_path(app, wheel)
    data = wheel[1]

    r = app.get(path, status=200)
    assert r.body == data
    assert r.content_type == "application/zip"
    assert r.content_length == len(data)
    assert r.headers["Accept-Ranges"] == "bytes"
    assert "immutable" in r.headers["Cache-Control"]
    etag = r.headers["ETag"]
    assert etag and r.headers["Last-Modified"]

    app.get(path, headers={"If-None-Match": etag}, status=304)
    app.get(path, headers={"If-Modified-Since": r.headers["Last-Modified"]}, status=304)
    assert app.get(path, headers={"If-None-Match": '"other"'}, status=200).body == data

    r = app.get(path, headers={"Range": "bytes=100-199"}, status=206)
    assert r.body == data[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    r = app.get(path, headers={"Range": "bytes=-10"}, status=206)
    assert r.body == data[-10:]
    app.get(path, headers={"Range": f"bytes={len(data) + 5}-"}, status=416)

    r = app.head(path, status=200)
    assert r.body == b"" and int(r.headers["Content-Length"]) == len(data)
    r = app.get(path + ".metadata", status=200)
    assert r.content_type == "text/plain" and b"Name: served" in r.body
    app.get(path.rsplit("/", 1)[0] + "/nothing.whl", status=404)
