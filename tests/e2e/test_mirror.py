"""Mirrors: the XML-RPC API (stdlib xmlrpc.client) and a real ``bandersnatch mirror`` run."""

from __future__ import annotations

import sys
import textwrap
import time
import urllib.request
import xmlrpc.client
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.dists import make_wheel
from tests.e2e.clients import client_env, get_json, run, sha256_of, tool_venv, twine_upload
from tests.e2e.conftest import DEMO_NAME, DEMO_VERSION, Live

pytestmark = pytest.mark.e2e


def twine(live: Live, url: str, home: Path, *files: Path) -> None:
    twine_upload(url, *files, home=home, check=True)


@pytest.fixture(scope="module")
def published(live: Live, demo_dists: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo wheel and sdist uploaded to /legacy/, and a second project uploaded to POST /pypi
    (multipart there is still an upload, text/xml is XML-RPC). Returns a scratch folder."""
    folder = tmp_path_factory.mktemp("published")
    twine(live, live.legacy, folder, *demo_dists)
    twine(live, live.url + "/pypi", folder, Path(make_wheel(str(folder), "Mirror-Two", "0.1")))
    return folder


def test_xmlrpc_methods_with_stdlib_client(live: Live, published: Path) -> None:
    proxy = xmlrpc.client.ServerProxy(live.url + "/pypi")
    demo = get_json(f"{live.url}/pypi/{DEMO_NAME}/json")
    two = get_json(f"{live.url}/pypi/mirror-two/json")

    assert sorted(proxy.list_packages()) == [DEMO_NAME, "Mirror-Two"]
    assert proxy.list_packages_with_serial() == {
        DEMO_NAME: demo["last_serial"],
        "Mirror-Two": two["last_serial"],
    }
    last = proxy.changelog_last_serial()
    assert last == max(demo["last_serial"], two["last_serial"])
    with urllib.request.urlopen(live.simple, timeout=30) as r:
        assert r.headers["X-PyPI-Last-Serial"] == str(last)

    changes = proxy.changelog_since_serial(0)
    assert [c[4] for c in changes] == sorted(c[4] for c in changes) and changes[-1][4] == last
    now = time.time()
    for name, version, timestamp, action, serial in changes:
        assert name in (DEMO_NAME, "Mirror-Two")
        assert isinstance(version, str) and isinstance(action, str) and isinstance(serial, int)
        assert isinstance(timestamp, int) and abs(timestamp - now) < 3600
    wheel = next(f for f in demo["urls"] if f["packagetype"] == "bdist_wheel")
    actions = {(c[0], c[1], c[3]) for c in changes}
    assert (DEMO_NAME, DEMO_VERSION, f"add py3 file {wheel['filename']}") in actions
    assert proxy.changelog_since_serial(last) == []
    since_demo = proxy.changelog_since_serial(demo["last_serial"])
    assert {c[0] for c in since_demo} == {"Mirror-Two"}

    assert proxy.package_releases(DEMO_NAME) == [DEMO_VERSION]
    assert proxy.package_releases("cloud_demo", True) == [DEMO_VERSION]
    assert proxy.package_releases("no-such-project") == []

    urls = proxy.release_urls(DEMO_NAME, DEMO_VERSION)
    assert {u["filename"]: u["digests"]["sha256"] for u in urls} == {
        f["filename"]: f["digests"]["sha256"] for f in demo["urls"]
    }
    assert all(u["url"] == f["url"] for u in urls for f in demo["urls"] if f["filename"] == u["filename"])
    assert proxy.release_urls(DEMO_NAME, "9.9") == []

    data = proxy.release_data(DEMO_NAME, DEMO_VERSION)
    assert data["name"] == DEMO_NAME and data["version"] == DEMO_VERSION
    assert data["summary"] == demo["info"]["summary"]
    assert data["requires_python"] == ">=3.8"
    assert data["classifiers"] == demo["info"]["classifiers"]
    assert proxy.release_data(DEMO_NAME, "9.9") == {}

    with pytest.raises(xmlrpc.client.Fault) as fault:
        proxy.no_such_method()
    assert fault.value.faultCode == -32601
    with pytest.raises(xmlrpc.client.Fault) as fault:
        proxy.changelog_since_serial("not a number")
    assert fault.value.faultCode == -32602

    assert xmlrpc.client.ServerProxy(live.url + "/RPC2").changelog_last_serial() == last


@pytest.fixture(scope="session")
def bandersnatch(tools_cache: Path) -> Path:
    return tool_venv(tools_cache, "bandersnatch", "bandersnatch") / "bandersnatch"


def mirror(bandersnatch: Path, live: Live, folder: Path) -> str:
    """One ``bandersnatch mirror`` run from the live index into ``folder``/mirror."""
    config = folder / "bandersnatch.conf"
    config.write_text(
        textwrap.dedent(f"""\
        [mirror]
        directory = {folder / "mirror"}
        master = {live.url}
        allow-non-https = true
        json = true
        release-files = true
        hash-index = false
        simple-format = ALL
        workers = 1
        verifiers = 1
        timeout = 10
        global-timeout = 120
        stop-on-error = true
        storage-backend = filesystem
        compare-method = hash
        """)
    )
    return run([bandersnatch, "--config", config, "mirror"], env=client_env(home=folder), timeout=300).stdout


def check_mirrored(folder: Path, live: Live, name: str) -> list[str]:
    """Every file of project ``name`` is in the mirror with the index's sha256; returns the filenames."""
    web = folder / "mirror" / "web"
    body = get_json(f"{live.url}/pypi/{name}/json")
    files = [f for release in body["releases"].values() for f in release]
    normalized = name.lower().replace("_", "-")
    page = (web / "simple" / normalized / "index.html").read_text()
    for f in files:
        local = web / urlsplit(f["url"]).path.lstrip("/")
        assert local.is_file(), f"{local} not mirrored"
        assert sha256_of(local) == f["digests"]["sha256"]
        assert f"#sha256={f['digests']['sha256']}" in page and f["filename"] in page
    assert (web / "json" / normalized).is_file()
    return [f["filename"] for f in files]


def test_bandersnatch_mirror(live: Live, published: Path, bandersnatch: Path, tmp_path: Path) -> None:
    out = mirror(bandersnatch, live, tmp_path)
    serial = xmlrpc.client.ServerProxy(live.url + "/pypi").changelog_last_serial()
    assert (tmp_path / "mirror" / "status").read_text().strip() == str(serial), out
    assert len(check_mirrored(tmp_path, live, DEMO_NAME)) == 2
    assert check_mirrored(tmp_path, live, "Mirror-Two") == ["mirror_two-0.1-py3-none-any.whl"]

    # A new release: the next run finds it through changelog_since_serial and adds it.
    new = Path(make_wheel(str(tmp_path), "Mirror-Two", "0.2"))
    twine(live, live.legacy, tmp_path, new)
    out = mirror(bandersnatch, live, tmp_path)
    serial = xmlrpc.client.ServerProxy(live.url + "/pypi").changelog_last_serial()
    assert (tmp_path / "mirror" / "status").read_text().strip() == str(serial), out
    assert sorted(check_mirrored(tmp_path, live, "Mirror-Two")) == [
        "mirror_two-0.1-py3-none-any.whl",
        new.name,
    ]

    # The mirror is an index pip reads, with the server out of the way.
    mirrored = tmp_path / "mirror" / "web" / "simple"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-cache-dir",
            "--index-url",
            mirrored.as_uri() + "/",
            "-d",
            tmp_path / "from-mirror",
            "Mirror-Two",
        ],
        env=client_env(home=tmp_path),
    )
    assert [p.name for p in (tmp_path / "from-mirror").iterdir()] == [new.name]
