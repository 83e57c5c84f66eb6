"""Private packages behind a real Varnish with the shipped VCL, on S3 (moto's server):
anonymous and authenticated readers in every order never see each other's pages, a private
file's signed URL is never cached, and a visibility flip shows at the edge within 2 s."""

from __future__ import annotations

import base64
import http.client
import time

import pytest

from pypi.index.db import Database
from pypi.operations.purge_worker import pending
from tests.backends import s3_moto_section
from tests.dists import make_wheel
from tests.e2e.clients import twine_upload
from tests.services.live_server import cloudpypi, free_port, start_server, wait_for, write_config

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery"
FRESH_WITHIN = 2.0
ALICE = {"Authorization": "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()}


class Edge:
    def __init__(self, port: int, config: str, url: str) -> None:
        self.port, self.config, self.url = port, config, url

    def get(self, path: str, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.headers, r.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def upload(self, name: str, folder) -> None:
        wheel = make_wheel(str(folder), name, "1.0")
        twine_upload(f"{self.url}/legacy/", wheel, home=folder, password=PASSWORD, check=True)

    def cli(self, *args: str) -> str:
        return cloudpypi(*args, config=self.config).stdout


@pytest.fixture(scope="module")
def edge(tmp_path_factory, varnish_factory, moto_s3):
    tmp = tmp_path_factory.mktemp("private-edge")
    client = moto_s3.client()
    bucket = f"edge-{int(time.time() * 1000)}"
    client.create_bucket(Bucket=bucket)
    vport = free_port()
    config = write_config(
        str(tmp / "config.ini"),
        {
            "server": {"data_dir": str(tmp / "data")},
            "database": {"url": f"sqlite:///{tmp}/cloudpypi.sqlite3"},
            "storage": s3_moto_section(moto_s3, bucket),
            "cdn": {
                "files_url": f"http://127.0.0.1:{vport}/packages/",
                "purge": "varnish",
                "varnish_urls": f"http://127.0.0.1:{vport}/",
                "purge_timeout": "2",
            },
        },
    )
    cloudpypi("adduser", "alice", "--password", PASSWORD, config=config)
    app = start_server(config)
    try:
        varnish = varnish_factory("127.0.0.1", int(app.url.rsplit(":", 1)[1]), port=vport)
        e = Edge(vport, config, varnish.url)
        for name in ("edge-secret", "edge-open", "edge-flip"):
            e.upload(name, tmp)
        e.cli("visibility", "edge-secret", "private")
        db = Database(f"sqlite:///{tmp}/cloudpypi.sqlite3")
        try:  # the purges of the set-up are delivered before the tests look at cache states
            wait_for(lambda: pending(db) == [], 15)
        finally:
            db.close()
        yield e
    finally:
        app.stop()
        client.close()


def _x(headers) -> str:
    return headers.get("X-Cache", "")


@pytest.mark.parametrize("order", ["anonymous-first", "authenticated-first"])
def test_anonymous_and_authenticated_readers_never_see_each_others_pages(edge, order):
    paths = ["/simple/", "/simple/edge-secret/", "/", "/pypi/edge-secret/json", "/project/edge-secret/"]
    for path in paths:
        sequence = (
            [None, ALICE, None, ALICE, None] if order == "anonymous-first" else [ALICE, None, ALICE, None]
        )
        for headers in sequence:
            status, h, body = edge.get(path, headers)
            if headers is None:
                if path in ("/simple/", "/"):
                    assert status == 200 and "edge-open" in body, (path, order)
                    assert "edge-secret" not in body and "edge_secret" not in body, (path, order)
                else:  # exactly the answer for a name that does not exist
                    unknown = edge.get(path.replace("edge-secret", "edge-nothing"))
                    assert (status, body) == (unknown[0], unknown[2].replace("edge-nothing", "edge-secret"))
                    assert status == 404, (path, order)
            else:
                assert status == 200 and "edge-secret" in body.lower().replace("_", "-"), (path, order)
                assert _x(h) == "PASS" and h["Cache-Control"] == "private, no-store"
    edge.get("/simple/")
    status, h, body = edge.get("/simple/")
    assert _x(h) == "HIT" and "edge-secret" not in body  # cached for anyone, without the private name


def test_a_private_files_signed_url_is_never_cached(edge):
    _, _, page = edge.get("/simple/edge-secret/", ALICE)
    link = page.split('href="', 1)[1].split("#", 1)[0]
    assert link.startswith("/packages/")  # through the application, not the public files URL
    locations = []
    for _ in range(3):
        status, h, _ = edge.get(link, ALICE)
        assert status == 302 and _x(h) == "PASS" and h["Cache-Control"] == "private, no-store"
        assert "X-Amz-Signature=" in h["Location"]
        locations.append(h["Location"])
        status, h, body = edge.get(link)
        assert status == 404 and "X-Amz" not in body and "Location" not in h and _x(h) != "HIT"
    # The signed URL does fetch the file.
    import urllib.request

    with urllib.request.urlopen(locations[-1], timeout=10) as r:
        assert r.read(2) == b"PK"


def test_a_visibility_flip_shows_at_the_edge_within_two_seconds(edge):
    for path in ("/simple/", "/simple/edge-flip/"):
        edge.get(path)
        status, h, body = edge.get(path)
        assert status == 200 and _x(h) == "HIT" and "edge-flip" in body
    edge.cli("visibility", "edge-flip", "private")
    hidden = wait_for(lambda: edge.get("/simple/edge-flip/")[0] == 404, FRESH_WITHIN)
    wait_for(lambda: "edge-flip" not in edge.get("/simple/")[2], FRESH_WITHIN)
    edge.cli("visibility", "edge-flip", "public")
    shown = wait_for(lambda: edge.get("/simple/edge-flip/")[0] == 200, FRESH_WITHIN)
    wait_for(lambda: "edge-flip" in edge.get("/simple/")[2], FRESH_WITHIN)
    print(f"hidden at the edge after {hidden:.2f} s, shown after {shown:.2f} s")
