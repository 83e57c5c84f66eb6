"""No response a shared cache may keep depends on Host or X-Forwarded-*: absolute URLs come from
``[webui] url`` or serve's own address, never from the request."""

from __future__ import annotations

import xmlrpc.client

import pytest
import webtest

from pypi.app import make_app
from tests.conftest import make_config
from tests.dists import make_sdist, make_wheel
from tests.uploading import upload

FORGED = [
    {},
    {"Host": "evil.example"},
    {"Host": "evil.example:8443", "X-Forwarded-Host": "evil2.example", "X-Forwarded-Proto": "https"},
    {"X-Forwarded-Host": "evil3.example", "X-Forwarded-Proto": "https", "X-Forwarded-Port": "444"},
    {"X-Forwarded-For": "203.0.113.1", "Forwarded": "for=203.0.113.1;host=evil4.example;proto=https"},
]
PAGES = [
    "/",
    "/?q=demo",
    "/simple/",
    "/simple",
    "/simple/demo/",
    "/simple/Demo/",
    "/simple/demo/?format=application/vnd.pypi.simple.v1%2Bjson",
    "/pypi/demo/json",
    "/pypi/demo/1.0/json",
    "/pypi/Demo/json",
    "/project/demo/",
    "/project/demo/1.0/",
    "/project/Demo/",
    "/pypi/missing/json",
]
RPC = [("release_urls", ("demo", "1.0")), ("release_data", ("demo", "1.0")), ("list_packages", ())]


def _cacheable(r) -> bool:
    return "public" in r.headers.get("Cache-Control", "")


def _answers(testapp, extra: dict) -> list:
    out = []
    for page in PAGES:
        r = testapp.get(page, headers=extra, status="*")
        assert _cacheable(r), page
        out.append((page, r.status, r.headers.get("Location"), r.body))
    for method, params in RPC:
        body = xmlrpc.client.dumps(params, method).encode()
        r = testapp.post("/RPC2", params=body, headers={**extra, "Content-Type": "text/xml"})
        assert _cacheable(r), method
        out.append((method, r.status, None, r.body))
    return out


@pytest.mark.parametrize("webui_url", ["", "https://pypi.example.org"])
def test_cacheable_answers_do_not_depend_on_host(tmp_path, db_url, users, webui_url):
    config = make_config(tmp_path, db_url, webui={"url": webui_url})
    testapp = webtest.TestApp(make_app(config))
    upload(testapp, make_wheel(str(tmp_path), "demo", "1.0"), name="demo", version="1.0")
    upload(testapp, make_sdist(str(tmp_path), "demo", "1.0"), name="demo", version="1.0")
    # The forged Host comes first: it must not reach what the render cache keeps either.
    answers = [_answers(testapp, extra) for extra in reversed(FORGED)]
    for other in answers[1:]:
        assert other == answers[0]
    text = b"".join(body for a in answers for *_, body in a) + str(answers).encode()
    assert b"evil" not in text
    base = (webui_url or "http://127.0.0.1:8080").encode()
    home = next(body for page, _s, _l, body in answers[0] if page == "/")
    assert b"pip install --index-url " + base + b"/simple/" in home
    project_json = next(body for page, _s, _l, body in answers[0] if page == "/pypi/demo/json")
    assert b'"url": "' + base + b"/packages/" in project_json  # absolute, as on pypi.org
    assert b'"package_url": "' + base + b'/project/demo/"' in project_json
    redirect = next(loc for page, _s, loc, _b in answers[0] if page == "/simple/Demo/")
    assert redirect == base.decode() + "/simple/demo/"


def test_public_url_follows_serve_address(tmp_path, db_url):
    config = make_config(tmp_path, db_url, server={"host": "0.0.0.0", "port": "9999"})
    assert config.public_url == "http://localhost:9999"
    config = make_config(tmp_path, db_url, server={"host": "::1", "port": "81"})
    assert config.public_url == "http://[::1]:81"
    config = make_config(tmp_path, db_url, webui={"url": "https://pypi.example.org/"})
    assert config.public_url == "https://pypi.example.org"
