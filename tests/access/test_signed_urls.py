"""Files of private projects: the application checks, then redirects to a signed, expiring
URL from the store (S3 presigned on moto's server, a Swift TempURL checked by Swift's own
``tempurl`` middleware) or from CloudFront (checked here with the public key)."""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
import uuid

import pytest
import requests
import webtest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cdn.signing import from_config as cloudfront_from_config
from pypi.app import make_app
from pypi.index import access, auth, packages
from pypi.index.db import Database
from storage.s3 import S3Storage
from storage.swift import SwiftStorage
from tests.backends import new_swift_container, s3_moto_section, swift_section
from tests.conftest import PASSWORD, basic, make_config
from tests.dists import make_wheel
from tests.uploading import upload


@pytest.fixture
def db_url(tmp_path):
    """SQLite only: what is tested here is the stores', not the database's."""
    url = f"sqlite:///{tmp_path}/test.sqlite3"
    database = Database(url)
    database.migrate()
    database.close()
    return url


@pytest.fixture
def rsa_key(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "cloudfront.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return key, str(pem)


# -- the stores and the signer on their own ------------------------------------------------


def test_s3_presigned_urls_work_and_unsigned_ones_are_refused(moto_s3, moto_s3_bucket):
    """moto's server answers a presigned GET and refuses an unsigned one; it checks neither the
    signature nor the expiry (and its auth mode fails presigned URLs with a 500), so those are
    left to S3 itself: the URL carries SigV4 query authentication and X-Amz-Expires."""
    store = S3Storage.from_config(s3_moto_section(moto_s3, moto_s3_bucket, prefix="p"), data_dir="")
    store.put("packages/aa/bb/x.whl", _bytes(b"wheel bytes"))
    url = store.signed_url("packages/aa/bb/x.whl", 300)
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "X-Amz-Signature=" in url
    assert "X-Amz-Expires=300" in url and "/p/packages/aa/bb/x.whl?" in url
    assert requests.get(url, timeout=10).content == b"wheel bytes"
    unsigned = url.split("?", 1)[0]
    assert requests.get(unsigned, timeout=10).status_code == 403


def test_swift_temp_urls_work_and_swift_refuses_expired_ones(swift_service):
    container = new_swift_container(swift_service)
    store = SwiftStorage(
        auth_url=swift_service.auth_url,
        user=swift_service.user,
        key=swift_service.key,
        container=container,
        temp_url_key=uuid.uuid4().hex,
    )
    store.put("packages/aa/bb/x.whl", _bytes(b"swift bytes"))
    url = store.signed_url("packages/aa/bb/x.whl", 300)
    assert "temp_url_sig=" in url and "temp_url_expires=" in url
    assert requests.get(url, timeout=10).content == b"swift bytes"
    assert requests.get(url.split("?", 1)[0], timeout=10).status_code == 401
    short = store.signed_url("packages/aa/bb/x.whl", 1)
    time.sleep(2.1)
    assert requests.get(short, timeout=10).status_code == 401  # Swift's tempurl refuses it
    forged = url.replace("temp_url_sig=", "temp_url_sig=0")
    assert requests.get(forged, timeout=10).status_code == 401
    store.close()


def test_cloudfront_signatures_verify_with_the_public_key(rsa_key):
    key, pem = rsa_key
    signer = cloudfront_from_config({"signing_key_id": "K2TESTKEYID", "signing_key_file": pem})
    base = "https://d111111abcdef8.cloudfront.net/packages/aa/bb/x.whl"
    before = int(time.time())
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(signer.sign(base, 300)).query)
    expires = int(query["Expires"][0])
    assert query["Key-Pair-Id"] == ["K2TESTKEYID"] and before + 299 <= expires <= int(time.time()) + 301
    policy = json.dumps(
        {"Statement": [{"Resource": base, "Condition": {"DateLessThan": {"AWS:EpochTime": expires}}}]},
        separators=(",", ":"),
    ).encode()
    signature = base64.b64decode(query["Signature"][0].replace("-", "+").replace("_", "=").replace("~", "/"))
    key.public_key().verify(signature, policy, padding.PKCS1v15(), hashes.SHA1())  # raises if wrong
    with pytest.raises(InvalidSignature):
        key.public_key().verify(
            signature, policy.replace(b"x.whl", b"y.whl"), padding.PKCS1v15(), hashes.SHA1()
        )


def test_cloudfront_settings_must_come_together(tmp_path):
    assert cloudfront_from_config({}) is None
    with pytest.raises(ValueError, match="signing_key_id and signing_key_file"):
        cloudfront_from_config({"signing_key_id": "K"})
    with pytest.raises(ValueError, match="cannot read"):
        cloudfront_from_config({"signing_key_id": "K", "signing_key_file": str(tmp_path / "none.pem")})


# -- through the application --------------------------------------------------------------


def _private_index(config, tmp_path):
    database = Database(config.database.url)
    app = webtest.TestApp(make_app(config, db=database))
    with database.transaction(write=True) as tx:
        auth.create_user(tx, "alice", PASSWORD)
    upload(app, make_wheel(str(tmp_path), "Signed.Pkg", "1.0"), name="Signed.Pkg", version="1.0")
    upload(app, make_wheel(str(tmp_path), "Open.Pkg", "1.0"), name="Open.Pkg", version="1.0")
    with database.transaction(write=True) as tx:
        access.set_visibility(tx, packages.get_project(tx, "Signed.Pkg"), True)
    url = app.get("/pypi/signed-pkg/json", headers=basic("alice")).json["urls"][0]["url"]
    return app, urllib.parse.urlsplit(url).path  # the JSON API gives absolute URLs


def _redirected(app, url, expires=300):
    app.get(url, status=404)  # anonymous: no such file
    r = app.get(url, headers=basic("alice"), status=302)
    assert r.headers["Cache-Control"] == "private, no-store"
    assert "Surrogate-Key" not in r.headers and "Surrogate-Control" not in r.headers
    return r.headers["Location"]


def test_private_files_redirect_to_s3_presigned_urls(moto_s3, moto_s3_bucket, tmp_path, db_url):
    section = s3_moto_section(moto_s3, moto_s3_bucket)
    config = make_config(tmp_path, db_url, storage=section)
    app, url = _private_index(config, tmp_path)
    location = _redirected(app, url)
    assert location.startswith(moto_s3.endpoint_url) and "X-Amz-Expires=300" in location
    assert requests.get(location, timeout=10).content[:2] == b"PK"


def test_private_files_redirect_to_swift_temp_urls(swift_service, tmp_path, db_url):
    section = swift_section(swift_service, new_swift_container(swift_service), temp_url_key="k" * 32)
    config = make_config(tmp_path, db_url, storage=section, access={"signed_url_expires": "60"})
    app, url = _private_index(config, tmp_path)
    location = _redirected(app, url)
    expires = int(urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["temp_url_expires"][0])
    assert time.time() + 55 < expires <= time.time() + 61
    assert requests.get(location, timeout=10).content[:2] == b"PK"


def test_private_files_redirect_to_cloudfront_signed_urls(rsa_key, tmp_path, db_url):
    _, pem = rsa_key
    cdn = {
        "files_url": "https://d111111abcdef8.cloudfront.net/",
        "signing_key_id": "K2",
        "signing_key_file": pem,
    }
    config = make_config(tmp_path, db_url, cdn=cdn)
    app, url = _private_index(config, tmp_path)
    assert url.startswith("/packages/")  # the link goes to the application, which checks
    location = _redirected(app, url)
    assert location.startswith(
        "https://d111111abcdef8.cloudfront.net/" + url[len("/packages/") :] + "?Expires="
    )
    assert "Signature=" in location and "Key-Pair-Id=K2" in location
    # A public project's files keep their immutable public URLs.
    public = app.get("/pypi/open-pkg/json").json["urls"][0]["url"]
    assert public.startswith("https://d111111abcdef8.cloudfront.net/") and "Signature" not in public


def test_local_storage_streams_private_files_after_the_check(tmp_path, db_url):
    config = make_config(tmp_path, db_url)
    app, url = _private_index(config, tmp_path)
    app.get(url, status=404)
    r = app.get(url, headers=basic("alice"), status=200)
    assert r.body[:2] == b"PK" and r.headers["Cache-Control"] == "private, no-store"


def _bytes(data: bytes):
    import io

    return io.BytesIO(data)
