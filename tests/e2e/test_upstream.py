"""Issue 10: ``cloudpypi mirror`` and proxy mode against real upstreams on 127.0.0.1.

Two upstreams: a second CloudPyPI (XML-RPC serials, PEP 691 JSON) loaded with
wheels and sdists by twine, and a static PEP 503 tree (HTML only) served by
``python -m http.server``. pip installs through the proxy and from the mirror.
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.dists import make_sdist, make_wheel
from tests.e2e.clients import PASSWORD, client_env, fresh_venv, get_json, run, twine_upload
from tests.services.live_server import cloudpypi, start_server, write_config
from tests.services.static_index import StaticServer, write_static_tree

pytestmark = pytest.mark.e2e


def _meta(name: str, version: str, *requires: str, requires_python: str = "") -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        f"Summary: {name} from upstream",
    ]
    lines += [f"Requires-Dist: {r}" for r in requires]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    return "\n".join(lines) + "\n\n"


def twine(url: str, home: Path, *files: str | Path, check: bool = True):
    return twine_upload(url, *files, home=home, check=check)


def get(url: str, accept: str = "application/vnd.pypi.simple.v1+json"):
    """(status, headers, body) without raising on 4xx/5xx."""
    request = urllib.request.Request(url, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def index_config(
    folder: Path, upstream_url: str, mode: str, storage: dict | None = None, **upstream: str
) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    return write_config(
        str(folder / "config.ini"),
        {
            "server": {"data_dir": str(folder / "data")},
            "database": {"url": f"sqlite:///{folder}/index.sqlite3"},
            "storage": storage or {"backend": "local"},
            "upstream": {"url": upstream_url, "mode": mode, "timeout": "3", **upstream},
        },
    )


def pip_install(tmp: Path, index: str, *reqs: str) -> tuple[Path, str]:
    python = fresh_venv(tmp / "venv")
    out = run(
        [python, "-m", "pip", "install", "--no-cache-dir", "--index-url", index, *reqs],
        env=client_env(home=tmp),
    ).stdout
    return python, out


def module_version(python: Path, module: str) -> str:
    return run([python, "-c", f"import {module}; print({module}.VERSION)"]).stdout.strip()


# -- the upstreams --------------------------------------------------------------


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, str]:
    d = str(tmp_path_factory.mktemp("upstream-dists"))
    files = {
        "alpha-1.0.whl": make_wheel(d, "up-alpha", "1.0"),
        "alpha-1.0.tar.gz": make_sdist(d, "up-alpha", "1.0"),
        "alpha-1.1.whl": make_wheel(
            d,
            "up-alpha",
            "1.1",
            metadata=_meta("up-alpha", "1.1", requires_python=">=3.8"),
            requires_python=">=3.8",
        ),
        "alpha-2.0rc1.whl": make_wheel(d, "up-alpha", "2.0rc1"),
        "beta-1.0.whl": make_wheel(d, "up-beta", "1.0", metadata=_meta("up-beta", "1.0", "up-alpha>=1.0")),
        "gamma-1.0.whl": make_wheel(d, "up-gamma", "1.0", tag="cp311-cp311-manylinux_2_17_x86_64"),
        "gamma-1.0.tar.gz": make_sdist(d, "up-gamma", "1.0"),
    }
    return files


@pytest.fixture(scope="module")
def cloud_upstream(tmp_path_factory, dists):
    """A CloudPyPI holding up-alpha, up-beta and up-gamma, uploaded by twine."""
    folder = tmp_path_factory.mktemp("cloud-upstream")
    config = write_config(
        str(folder / "config.ini"),
        {
            "server": {"data_dir": str(folder / "data")},
            "database": {"url": f"sqlite:///{folder}/index.sqlite3"},
            "storage": {"backend": "local"},
        },
    )
    server = start_server(config)
    try:
        cloudpypi("adduser", "alice", "--password-stdin", config=config, stdin=PASSWORD + "\n")
        twine(server.url + "/legacy/", folder, *dists.values())
        yield server
    finally:
        server.stop()


def _bytes(path: str) -> bytes:
    return Path(path).read_bytes()


@pytest.fixture
def static_upstream(tmp_path, dists):
    """A static tree (not CloudPyPI): st-one (2 versions, one prerelease, one yanked), st-two
    (a wheel whose advertised sha256 is wrong), st-skip, st-plat (a manylinux wheel)."""
    d = str(tmp_path / "st-dists")
    os.makedirs(d)
    one_10 = make_wheel(d, "st-one", "1.0")
    one_11 = make_wheel(d, "st-one", "1.1", requires_python=">=3.8")
    one_20b = make_wheel(d, "st-one", "2.0b1")
    one_sd = make_sdist(d, "st-one", "1.1")
    two = make_wheel(d, "st-two", "1.0")
    two_ok = make_sdist(d, "st-two", "1.0")
    skip = make_wheel(d, "st-skip", "1.0")
    plat = make_wheel(d, "st-plat", "1.0", tag="cp311-cp311-win_amd64")
    tree = {
        "st-one": [
            (os.path.basename(one_10), _bytes(one_10), {"data-yanked": "broken"}),
            (os.path.basename(one_11), _bytes(one_11), {"data-requires-python": "&gt;=3.8"}),
            (os.path.basename(one_sd), _bytes(one_sd), {}),
            (os.path.basename(one_20b), _bytes(one_20b), {}),
        ],
        "st-two": [
            (os.path.basename(two), _bytes(two), {"sha256": "0" * 64}),
            (os.path.basename(two_ok), _bytes(two_ok), {}),
        ],
        "st-skip": [(os.path.basename(skip), _bytes(skip), {})],
        "st-plat": [(os.path.basename(plat), _bytes(plat), {})],
    }
    write_static_tree(tmp_path / "tree", tree)
    server = StaticServer(tmp_path / "tree").start()
    try:
        yield server
    finally:
        server.stop()


def simple_json(index_url: str, name: str) -> dict:
    status, _h, body = get(f"{index_url}/simple/{name}/")
    assert status == 200, (status, body[:300])
    import json

    return json.loads(body)


# -- proxy ----------------------------------------------------------------------


def test_proxy_pip_install_through_it_on_s3(cloud_upstream, moto_s3, moto_s3_bucket, tmp_path, dists):
    from tests.backends import s3_moto_section

    config = index_config(
        tmp_path / "proxy",
        cloud_upstream.url + "/simple/",
        "proxy",
        storage=s3_moto_section(moto_s3, moto_s3_bucket),
        page_ttl="60",
    )
    server = start_server(config)
    try:
        page = simple_json(server.url, "up-alpha")
        upstream_page = simple_json(cloud_upstream.url, "up-alpha")
        assert {f["filename"]: f["hashes"]["sha256"] for f in page["files"]} == {
            f["filename"]: f["hashes"]["sha256"] for f in upstream_page["files"]
        }
        # Links are this index's own file URLs, not upstream's.
        assert all(f["url"].startswith("/packages/") for f in page["files"]), page["files"]
        wheel11 = next(f for f in page["files"] if f["filename"] == "up_alpha-1.1-py3-none-any.whl")
        assert wheel11["requires-python"] == ">=3.8"
        status, headers, _ = get(server.url + "/simple/up-alpha/")
        assert "max-age=60" in headers["Cache-Control"]  # proxied pages: the short TTL

        python, out = pip_install(tmp_path, server.url + "/simple/", "up-beta")
        assert module_version(python, "up_alpha") == "1.1" and module_version(python, "up_beta") == "1.0"
        keys = {o["Key"] for o in moto_s3.client().list_objects_v2(Bucket=moto_s3_bucket).get("Contents", [])}
        assert any(k.endswith("up_beta-1.0-py3-none-any.whl") for k in keys), keys
        assert any(k.endswith("up_alpha-1.1-py3-none-any.whl") for k in keys), keys
        assert not any("2.0rc1" in k for k in keys)  # only what was downloaded is stored
        # PEP 658: pip reads the metadata first; the proxy fetches only that (verified), not the wheel.
        rc1 = next(f for f in page["files"] if "2.0rc1" in f["filename"])
        status, _h, body = get(server.url + rc1["url"] + ".metadata", accept="*/*")
        assert status == 200 and hashlib.sha256(body).hexdigest() == rc1["core-metadata"]["sha256"]
        keys = {o["Key"] for o in moto_s3.client().list_objects_v2(Bucket=moto_s3_bucket).get("Contents", [])}
        assert any(k.endswith("2.0rc1-py3-none-any.whl.metadata") for k in keys)
        assert not any(k.endswith("2.0rc1-py3-none-any.whl") for k in keys)
        # The stored file is served from storage with upstream's bytes.
        url = server.url + wheel11["url"]
        status, _h, body = get(url, accept="*/*")
        assert status == 200 and hashlib.sha256(body).hexdigest() == wheel11["hashes"]["sha256"]
        # The JSON API shows the proxied project too.
        assert "1.1" in get_json(server.url + "/pypi/up-alpha/json")["releases"]

        # Dependency confusion: an upload to a proxied name is refused with a clear message.
        refused = twine(server.url + "/legacy/", tmp_path, dists["beta-1.0.whl"], check=False)
        assert refused.returncode != 0
        cloudpypi("adduser", "alice", "--password-stdin", config=config, stdin=PASSWORD + "\n")
        refused = twine(server.url + "/legacy/", tmp_path, dists["beta-1.0.whl"], check=False)
        assert refused.returncode != 0 and "dependency confusion" in refused.stdout, refused.stdout
    finally:
        server.stop()


def test_proxy_on_a_redirecting_store_pulls_the_file_then_redirects(
    cloud_upstream, moto_s3, moto_s3_bucket, tmp_path
):
    """``[storage] serve = redirect``: /packages/ answers with the store's URL. For a proxied
    file not pulled yet, the first download pulls, verifies and stores it, then redirects."""
    from tests.backends import s3_moto_section

    storage = s3_moto_section(
        moto_s3,
        moto_s3_bucket,
        serve="redirect",
        public_url=f"{moto_s3.endpoint_url}/{moto_s3_bucket}",
        acl="public-read",
    )
    config = index_config(tmp_path / "proxy", cloud_upstream.url + "/simple/", "proxy", storage=storage)
    server = start_server(config)
    try:
        python, _out = pip_install(tmp_path, server.url + "/simple/", "up-beta")
        assert module_version(python, "up_alpha") == "1.1" and module_version(python, "up_beta") == "1.0"
        keys = {o["Key"] for o in moto_s3.client().list_objects_v2(Bucket=moto_s3_bucket).get("Contents", [])}
        assert any(k.endswith("up_beta-1.0-py3-none-any.whl") for k in keys), keys
        # The download was a redirect to the store, which now holds upstream's bytes.
        page = simple_json(server.url, "up-gamma")
        sdist = next(f for f in page["files"] if f["filename"].endswith(".tar.gz"))
        opener = urllib.request.build_opener(_NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as answer:
            opener.open(server.url + sdist["url"], timeout=30)
        assert answer.value.code == 302
        location = answer.value.headers["Location"]
        assert location.startswith(moto_s3.endpoint_url), location
        status, _h, body = get(location, accept="*/*")
        assert status == 200 and hashlib.sha256(body).hexdigest() == sdist["hashes"]["sha256"]
    finally:
        server.stop()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_proxied_projects_show_upstreams_release_metadata(cloud_upstream, tmp_path):
    """The JSON API of a proxied project: the latest release described by upstream's JSON API
    when the page is imported, an older one by its PEP 658 metadata once pip read it."""
    config = index_config(tmp_path / "proxy", cloud_upstream.url + "/simple/", "proxy")
    server = start_server(config)
    try:
        simple_json(server.url, "up-beta")
        info = get_json(server.url + "/pypi/up-beta/json")["info"]
        assert info["summary"] == "up-beta from upstream", info
        assert info["requires_dist"] == ["up-alpha>=1.0"]
        upstream_info = get_json(cloud_upstream.url + "/pypi/up-alpha/1.1/json")["info"]
        page = simple_json(server.url, "up-alpha")
        wheel11 = next(f for f in page["files"] if f["filename"] == "up_alpha-1.1-py3-none-any.whl")
        latest = get_json(cloud_upstream.url + "/pypi/up-alpha/json")["info"]["version"]
        if latest != "1.1":  # not described by the JSON API: by its metadata, once fetched
            assert not get_json(server.url + "/pypi/up-alpha/1.1/json")["info"]["summary"]
        status, _h, _body = get(server.url + wheel11["url"] + ".metadata", accept="*/*")
        assert status == 200
        info = get_json(server.url + "/pypi/up-alpha/1.1/json")["info"]
        assert info["summary"] == upstream_info["summary"] == "up-alpha from upstream"
        assert info["requires_python"] == ">=3.8"
    finally:
        server.stop()


def test_proxy_upstream_down_and_hash_mismatch(static_upstream, tmp_path):
    config = index_config(tmp_path / "proxy", static_upstream.url, "proxy", page_ttl="0")
    server = start_server(config)
    try:
        page = simple_json(server.url, "st-one")
        files = {f["filename"]: f for f in page["files"]}
        assert files["st_one-1.0-py3-none-any.whl"]["yanked"] == "broken"
        fetched = files["st_one-1.1-py3-none-any.whl"]
        status, _h, body = get(server.url + fetched["url"], accept="*/*")
        assert status == 200 and hashlib.sha256(body).hexdigest() == fetched["hashes"]["sha256"]

        # Upstream serves bytes that do not match its sha256: never served, never stored.
        bad = next(f for f in simple_json(server.url, "st-two")["files"] if f["filename"].endswith(".whl"))
        status, _h, body = get(server.url + bad["url"], accept="*/*")
        assert status == 502 and b"do not match" in body
        assert not list((tmp_path / "proxy" / "data" / "packages").rglob(bad["filename"]))

        static_upstream.stop()
        status, headers, _ = get(server.url + "/simple/st-one/")
        assert status == 200 and "stale" in headers["Warning"]
        status, _h, body = get(server.url + fetched["url"], accept="*/*")
        assert status == 200 and hashlib.sha256(body).hexdigest() == fetched["hashes"]["sha256"]
        started = time.monotonic()
        status, _h, body = get(server.url + "/simple/never-seen/")
        assert status in (502, 503, 504) and time.monotonic() - started < 5, (status, body)
        not_stored = files["st_one-1.1.tar.gz"]
        status, _h, _b = get(server.url + not_stored["url"], accept="*/*")
        assert status in (502, 504)
    finally:
        server.stop()


def test_dependency_confusion_local_name_never_shows_upstream(cloud_upstream, tmp_path, dists):
    """The attack: upstream has 'up-alpha' 1.1 while the company's own up-alpha is 0.1 here.
    pip must get the local 0.1, in proxy and in mirror mode, unless an operator allows it."""
    folder = tmp_path / "index"
    # The company's own package is uploaded first (upstream's same name appears later) ...
    config = index_config(folder, cloud_upstream.url + "/simple/", "off")
    server = start_server(config)
    try:
        cloudpypi("adduser", "alice", "--password-stdin", config=config, stdin=PASSWORD + "\n")
        twine(server.url + "/legacy/", tmp_path, make_wheel(str(tmp_path), "up-alpha", "0.1"))
    finally:
        server.stop()
    # ... then the proxy is turned on.
    config = index_config(folder, cloud_upstream.url + "/simple/", "proxy", page_ttl="0")
    server = start_server(config)
    try:
        # Uploads to the local name still work; to a new name that upstream has, they are refused.
        twine(server.url + "/legacy/", tmp_path, make_wheel(str(tmp_path), "up-alpha", "0.2"))
        refused = twine(
            server.url + "/legacy/", tmp_path, make_wheel(str(tmp_path), "up-gamma", "7.0"), check=False
        )
        assert refused.returncode != 0 and "dependency confusion" in refused.stdout, refused.stdout
        page = simple_json(server.url, "up-alpha")
        assert [f["filename"] for f in page["files"]] == [
            "up_alpha-0.1-py3-none-any.whl",
            "up_alpha-0.2-py3-none-any.whl",
        ]
        python, _ = pip_install(tmp_path, server.url + "/simple/", "up-alpha")
        assert module_version(python, "up_alpha") == "0.2"
    finally:
        server.stop()
    # Mirror mode on the same index: the local name is not taken either ...
    mirror_cfg = index_config(folder, cloud_upstream.url + "/simple/", "mirror", projects="up-alpha")
    done = cloudpypi("mirror", config=mirror_cfg)
    assert "not taken from upstream" in done.stdout and "up-alpha" in done.stdout
    # ... until the operator allows that name explicitly.
    allowed = index_config(
        folder, cloud_upstream.url + "/simple/", "mirror", projects="up-alpha", allow_shadowing="up-alpha"
    )
    cloudpypi("mirror", config=allowed)
    server = start_server(allowed)
    try:
        names = {f["filename"] for f in simple_json(server.url, "up-alpha")["files"]}
        assert {
            "up_alpha-0.1-py3-none-any.whl",
            "up_alpha-0.2-py3-none-any.whl",
            "up_alpha-1.1-py3-none-any.whl",
        } <= names
    finally:
        server.stop()


# -- mirror ---------------------------------------------------------------------


def test_mirror_cloudpypi_pip_then_incremental(cloud_upstream, tmp_path):
    config = index_config(tmp_path / "mirror", cloud_upstream.url + "/simple/", "mirror")
    done = cloudpypi("mirror", "--jobs", "3", config=config)
    assert "in sync" in done.stdout and "7 files added" in done.stdout, done.stdout + done.stderr
    assert "[3/3]" in done.stderr  # progress
    server = start_server(config)
    try:
        for name in ("up-alpha", "up-beta", "up-gamma"):
            ours, theirs = simple_json(server.url, name), simple_json(cloud_upstream.url, name)
            keep = ("filename", "hashes", "requires-python", "size", "upload-time", "yanked", "core-metadata")
            assert sorted(({k: f[k] for k in keep} for f in ours["files"]), key=str) == sorted(
                ({k: f[k] for k in keep} for f in theirs["files"]), key=str
            )
        info = get_json(server.url + "/pypi/up-beta/json")["info"]
        assert info["summary"] == "up-beta from upstream" and info["requires_dist"] == ["up-alpha>=1.0"]
        python, _ = pip_install(tmp_path, server.url + "/simple/", "up-beta")
        assert module_version(python, "up_alpha") == "1.1"
        # An upload to a mirrored name is refused.
        cloudpypi("adduser", "alice", "--password-stdin", config=config, stdin=PASSWORD + "\n")
        refused = twine(
            server.url + "/legacy/", tmp_path, make_wheel(str(tmp_path), "up-beta", "9.0"), check=False
        )
        assert refused.returncode != 0 and "dependency confusion" in refused.stdout

        # Upstream changes: a yank, a new release, a removed file. The rerun is incremental.
        up_cfg = cloud_upstream.config
        cloudpypi("yank", "up-alpha", "1.1", "--reason", "bad build", config=up_cfg)
        twine(cloud_upstream.url + "/legacy/", tmp_path, make_wheel(str(tmp_path), "up-alpha", "1.2"))
        cloudpypi("remove", "up-gamma", "--file", "up_gamma-1.0.tar.gz", "--yes", config=up_cfg)
        started = time.monotonic()
        again = cloudpypi("mirror", config=config)
        assert time.monotonic() - started < 10
        assert "incremental" in again.stdout and "in sync" in again.stdout, again.stdout
        files = {f["filename"]: f for f in simple_json(server.url, "up-alpha")["files"]}
        assert files["up_alpha-1.1-py3-none-any.whl"]["yanked"] == "bad build"
        assert "up_alpha-1.2-py3-none-any.whl" in files
        assert [f["filename"] for f in simple_json(server.url, "up-gamma")["files"]] == [
            "up_gamma-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"
        ]
        nothing = cloudpypi("mirror", config=config)
        assert "0 files added" in nothing.stdout and "in sync" in nothing.stdout
    finally:
        server.stop()


def test_mirror_static_tree_filters_and_hash_mismatch_on_s3(
    static_upstream, moto_s3, moto_s3_bucket, tmp_path
):
    from tests.backends import s3_moto_section

    config = index_config(
        tmp_path / "m",
        static_upstream.url,
        "mirror",
        storage=s3_moto_section(moto_s3, moto_s3_bucket),
        projects="st-*",
        exclude="st-skip",
        prereleases="false",
        platforms="any",
        latest="1",
    )
    done = cloudpypi("mirror", config=config, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "hash mismatch" in done.stdout and "st_two-1.0-py3-none-any.whl" in done.stdout
    server = start_server(config)
    try:
        one = {f["filename"] for f in simple_json(server.url, "st-one")["files"]}
        assert one == {"st_one-1.1-py3-none-any.whl", "st_one-1.1.tar.gz"}  # latest=1, no prerelease
        assert {f["filename"] for f in simple_json(server.url, "st-two")["files"]} == {"st_two-1.0.tar.gz"}
        assert get(server.url + "/simple/st-skip/")[0] == 404
        assert get(server.url + "/simple/st-plat/")[0] == 404  # its only wheel is win_amd64
        keys = {o["Key"] for o in moto_s3.client().list_objects_v2(Bucket=moto_s3_bucket).get("Contents", [])}
        assert not any("st_two-1.0-py3" in k for k in keys)
        assert any(k.endswith("st_one-1.1-py3-none-any.whl.metadata") for k in keys)  # extracted
    finally:
        server.stop()


def test_mirror_interrupted_then_resumed(static_upstream, tmp_path):
    from pypi import config as config_mod
    from pypi.commands.common import open_database, open_storage
    from pypi.upstream.client import UpstreamClient
    from pypi.upstream.sync import Mirror

    cfg = config_mod.load(index_config(tmp_path / "m", static_upstream.url, "mirror", exclude="st-two"))
    db, store = open_database(cfg), open_storage(cfg)
    tmp_dir = str(tmp_path / "m" / "data" / "tmp")

    class Interrupted(UpstreamClient):
        calls = 0

        def download(self, url, dest_dir, *, max_size=0):
            Interrupted.calls += 1
            if Interrupted.calls == 3:
                raise KeyboardInterrupt  # Ctrl-C in the middle of a download
            return super().download(url, dest_dir, max_size=max_size)

    with pytest.raises(KeyboardInterrupt):
        Mirror(
            db, store, cfg.upstream, tmp_dir=tmp_dir, jobs=1, client=Interrupted(static_upstream.url)
        ).run()
    assert not list(Path(tmp_dir).glob("*.part"))
    with db.transaction() as tx:
        rows = tx.all("SELECT path FROM files")
    assert all(store.exists(r["path"]) for r in rows)  # no row without its object
    report = Mirror(db, store, cfg.upstream, tmp_dir=tmp_dir, jobs=2).run()
    assert report.ok, report.summary()
    with db.transaction() as tx:
        names = {r["filename"] for r in tx.all("SELECT filename FROM files")}
    assert names == {
        "st_one-1.0-py3-none-any.whl",
        "st_one-1.1-py3-none-any.whl",
        "st_one-1.1.tar.gz",
        "st_one-2.0b1-py3-none-any.whl",
        "st_skip-1.0-py3-none-any.whl",
        "st_plat-1.0-cp311-cp311-win_amd64.whl",
    }


def test_uv_pip_install_through_the_proxy(static_upstream, tools_cache, tmp_path):
    """uv reads the proxy's PEP 691 JSON; the yanked 1.0 and the prerelease 2.0b1 are skipped."""
    from tests.e2e.clients import tool_venv

    uv = tool_venv(tools_cache, "uv", "uv") / "uv"
    config = index_config(tmp_path / "proxy", static_upstream.url, "proxy")
    server = start_server(config)
    try:
        python = fresh_venv(tmp_path / "venv")
        run(
            [uv, "pip", "install", "--python", python, "--index-url", server.url + "/simple/", "st-one"],
            env=client_env(home=tmp_path),
        )
        assert module_version(python, "st_one") == "1.1"
    finally:
        server.stop()
