"""XML-RPC (pypi/views/xmlrpc.py) through WebTest: every method, and bad calls answered with a
Fault, never a 500."""

from __future__ import annotations

import xmlrpc.client

import pytest
import webtest

from pypi.app import make_app
from pypi.index import auth
from pypi.index.db import Database
from tests.conftest import PASSWORD, make_config
from tests.dists import make_sdist, make_wheel
from tests.uploading import upload


@pytest.fixture(scope="module")
def rpc(tmp_path_factory):
    """call(method, *params) -> the result (a Fault is raised as xmlrpc.client.Fault)."""
    tmp_path = tmp_path_factory.mktemp("xmlrpc")
    config = make_config(tmp_path, f"sqlite:///{tmp_path}/t.sqlite3", webui={"url": "https://pypi.test"})
    db = Database(config.database.url)
    db.migrate()
    with db.transaction(write=True) as tx:
        auth.create_user(tx, "alice", PASSWORD)
    app = webtest.TestApp(make_app(config, db=db))
    for version in ("1.0", "2.0rc1", "1.5"):
        upload(app, make_wheel(str(tmp_path), "Demo.Pkg", version), name="Demo.Pkg", version=version)
    upload(app, make_sdist(str(tmp_path), "Demo.Pkg", "1.5"), name="Demo.Pkg", version="1.5")
    upload(app, make_wheel(str(tmp_path), "other", "0.1"), name="other", version="0.1")

    def call(method, *params, path="/pypi"):
        body = xmlrpc.client.dumps(params, method, allow_none=False)
        r = app.post(path, body, headers={"Content-Type": "text/xml"}, status=200)
        assert r.content_type == "text/xml"
        call.last = r
        return xmlrpc.client.loads(r.body, use_builtin_types=True)[0][0]

    call.app = app
    yield call
    db.close()


def test_list_packages(rpc):
    assert sorted(rpc("list_packages")) == ["Demo.Pkg", "other"]
    with_serial = rpc("list_packages_with_serial")
    assert set(with_serial) == {"Demo.Pkg", "other"} and all(isinstance(s, int) for s in with_serial.values())


def test_changelog(rpc):
    last = rpc("changelog_last_serial")
    assert isinstance(last, int) and last > 0
    assert rpc.last.headers["X-PyPI-Last-Serial"] == str(last)
    changes = rpc("changelog_since_serial", 0)
    assert [c[4] for c in changes] == sorted(c[4] for c in changes) and changes[-1][4] == last
    assert {c[0] for c in changes} == {"Demo.Pkg", "other"}
    assert rpc("changelog_since_serial", last) == []


def test_package_releases(rpc):
    assert rpc("package_releases", "demo-pkg") == ["1.5"]  # the latest stable
    assert rpc("package_releases", "Demo.Pkg", True) == ["2.0rc1", "1.5", "1.0"]
    assert rpc("package_releases", "nothing-here") == []


def test_release_urls_match_the_json_api(rpc):
    files = rpc("release_urls", "Demo.Pkg", "1.5")
    assert sorted(f["packagetype"] for f in files) == ["bdist_wheel", "sdist"]
    json_files = rpc.app.get("/pypi/demo-pkg/1.5/json").json["urls"]
    by_name = {f["filename"]: f for f in json_files}
    for f in files:
        j = by_name[f["filename"]]
        assert f["url"] == j["url"] and f["digests"] == j["digests"] and f["size"] == j["size"]
        assert f["sha256_digest"] == j["digests"]["sha256"] and f["path"].startswith("packages/")
        assert f["requires_python"] == "" and j["requires_python"] is None  # XML-RPC has no null
    assert rpc("release_urls", "Demo.Pkg", "9.9") == []


def test_release_data(rpc):
    data = rpc("release_data", "Demo.Pkg", "1.0")
    assert data["name"] == "Demo.Pkg" and data["version"] == "1.0"
    assert data["release_url"] == "https://pypi.test/project/demo-pkg/1.0/"
    assert rpc("release_data", "Demo.Pkg", "9.9") == {}


def test_list_methods(rpc):
    methods = rpc("system.listMethods")
    assert {"list_packages", "release_urls", "changelog_since_serial"} <= set(methods)


@pytest.mark.parametrize(
    ("method", "params", "code"),
    [
        ("no_such_method", (), -32601),
        ("package_releases", (), -32602),
        ("package_releases", (42,), -32602),
        ("release_urls", ("Demo.Pkg",), -32602),
        ("release_urls", (["Demo.Pkg"], "1.0"), -32602),
        ("release_data", ("Demo.Pkg", 1.0), -32602),
        ("changelog_since_serial", ("yesterday",), -32602),
        ("changelog_since_serial", (True,), -32602),
        ("list_packages", ("extra",), -32602),
    ],
)
def test_bad_arguments_are_a_fault_not_a_500(rpc, method, params, code):
    with pytest.raises(xmlrpc.client.Fault) as exc:
        rpc(method, *params)
    assert exc.value.faultCode == code


def test_malformed_xml_is_a_parse_fault(rpc):
    r = rpc.app.post("/pypi", b"<methodCall><oops", headers={"Content-Type": "text/xml"}, status=200)
    with pytest.raises(xmlrpc.client.Fault) as exc:
        xmlrpc.client.loads(r.body)
    assert exc.value.faultCode == -32700


def test_a_huge_call_is_refused_before_parsing(rpc):
    body = b"<?xml version='1.0'?>" + b" " * (1024 * 1024 + 10)
    r = rpc.app.post("/pypi", body, headers={"Content-Type": "text/xml"}, status=413)
    assert "limited to" in r.text
