"""A live ``cloudpypi serve`` on each storage backend, driven by twine and pip; and storage faults.

Every index here differs from the next only in its ``[storage]`` section:
local disk, S3 on moto's server (streamed, or redirected to the bucket), S3
on Swift's s3api, and native Swift.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.backends import build, s3_moto_section, section_for, swift_section
from tests.dists import dist_name, make_wheel
from tests.e2e import clients
from tests.e2e.clients import PASSWORD, client_env, get_json, run
from tests.services.live_server import CLOUDPYPI, ROOT, cloudpypi, free_port, start_server, write_config
from tests.services.tcp_proxy import TcpProxy

pytestmark = pytest.mark.e2e

KINDS = ["local", "s3-moto", "s3-moto-redirect", "s3-swift", "swift"]


def index_config(folder: Path, storage: dict[str, str]) -> str:
    """config.ini for an index in ``folder``: the same for every backend but [storage]."""
    return write_config(
        str(folder / "config.ini"),
        {
            "server": {"data_dir": str(folder / "data")},
            "database": {"url": f"sqlite:///{folder}/index.sqlite3"},
            "storage": storage,
        },
    )


def twine_upload(url: str, dist: str | Path, home: Path, *, check: bool = True):
    return clients.twine_upload(url + "/legacy/", dist, home=home, check=check)


def pip_install_and_import(url: str, name: str, module: str, folder: Path) -> str:
    """``pip install --index-url URL/simple/ NAME`` into a new virtualenv; the module's VERSION."""
    venv = folder / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    env = client_env(home=folder)
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "--no-cache-dir",
            "--index-url",
            url + "/simple/",
            name,
        ],
        env=env,
    )
    return run([python, "-c", f"import {module}; print({module}.VERSION)"], env=env).stdout.strip()


def file_path_of(url: str, project: str) -> str:
    """The storage path of the project's only file, from the JSON API."""
    [file] = get_json(f"{url}/pypi/{project}/json")["urls"]
    return file["url"][file["url"].index("/packages/") + 1 :]


def file_rows(folder: Path) -> int:
    with sqlite3.connect(folder / "index.sqlite3") as conn:
        return conn.execute("SELECT COUNT(*) FROM files").fetchone()[0]


@pytest.mark.parametrize("kind", KINDS)
def test_twine_upload_then_pip_install(kind, request, tmp_path):
    extra = {}
    if kind == "s3-moto-redirect":
        moto = request.getfixturevalue("moto_s3")
        bucket = request.getfixturevalue("moto_s3_bucket")
        extra = {"serve": "redirect", "public_url": f"{moto.endpoint_url}/{bucket}", "acl": "public-read"}
    section = section_for(kind.removesuffix("-redirect"), request, tmp_path, **extra)
    config = index_config(tmp_path, section)
    cloudpypi("adduser", "alice", "--password-stdin", config=config, stdin=PASSWORD + "\n")
    name = f"Store-Demo-{kind}"
    module = dist_name(name)
    wheel = make_wheel(str(tmp_path), name, "1.0", module_code=f"VERSION = '1.0 on {kind}'\n")

    server = start_server(config)
    try:
        twine_upload(server.url, wheel, tmp_path)
        path = file_path_of(server.url, name)
        if kind == "s3-moto-redirect":
            with pytest.raises(urllib.error.HTTPError) as redirect:
                urllib.request.build_opener(_NoRedirect).open(f"{server.url}/{path}")
            assert redirect.value.code == 302
            assert redirect.value.headers["Location"] == f"{extra['public_url']}/{path}"
        assert pip_install_and_import(server.url, name, module, tmp_path) == f"1.0 on {kind}"
    finally:
        server.stop()

    # The object is really in the bucket or container, byte for byte, with its .metadata.
    store = build(section, tmp_path / "data")
    try:
        with store.open(path) as f, open(wheel, "rb") as original:
            assert f.read() == original.read()
        assert store.exists(path + ".metadata")
        assert store.stat(path).content_type == "application/zip"
    finally:
        store.close()
    if kind != "local":
        assert not (tmp_path / "data" / "packages").exists()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_storage_lost_mid_upload_gives_503_and_no_row_then_the_retry_succeeds(
    moto_s3, moto_s3_bucket, tmp_path
):
    """The S3 endpoint goes away while the server streams a 12 MB multipart upload to it."""
    proxy = TcpProxy(int(moto_s3.endpoint_url.rsplit(":", 1)[1])).start()
    section = s3_moto_section(
        moto_s3,
        moto_s3_bucket,
        endpoint_url=proxy.url,
        multipart_threshold="5MB",
        multipart_chunksize="5MB",
        max_concurrency="2",
        connect_timeout="2",
        read_timeout="10",
    )
    config = index_config(tmp_path, section)
    cloudpypi("adduser", "alice", "--password-stdin", config=config, stdin=PASSWORD + "\n")
    wheel = make_wheel(str(tmp_path), "big-one", "1.0", extra_bytes=12 * 1024 * 1024)
    server = start_server(config)
    try:
        proxy.cut_after(3 * 1024 * 1024)  # the store vanishes after 3 MB of the file reached it
        failed = twine_upload(server.url, wheel, tmp_path, check=False)
        assert failed.returncode != 0
        assert "503" in failed.stdout and "Storage unavailable" in failed.stdout, failed.stdout
        assert "nothing was saved" in failed.stdout
        assert proxy.forwarded >= 3 * 1024 * 1024
        assert file_rows(tmp_path) == 0
        with pytest.raises(urllib.error.HTTPError) as missing:
            get_json(f"{server.url}/pypi/big-one/json")
        assert missing.value.code == 404
        client = moto_s3.client()
        assert client.list_objects_v2(Bucket=moto_s3_bucket).get("KeyCount", 0) == 0
        assert "storing packages/" in server.log()  # the server logged what failed

        proxy.resume()  # the store is back, on the same address
        twine_upload(server.url, wheel, tmp_path)
        assert file_rows(tmp_path) == 1
        path = file_path_of(server.url, "big-one")
        head = client.head_object(Bucket=moto_s3_bucket, Key=path)
        assert head["ContentLength"] == Path(wheel).stat().st_size
        assert head["ETag"].strip('"').endswith("-3")  # multipart: three 5 MB parts
        client.close()
    finally:
        server.stop()
        proxy.close()


def test_storage_down_before_an_upload_gives_503(moto_s3, moto_s3_bucket, tmp_path):
    proxy = TcpProxy(int(moto_s3.endpoint_url.rsplit(":", 1)[1])).start()
    section = s3_moto_section(
        moto_s3, moto_s3_bucket, endpoint_url=proxy.url, connect_timeout="2", max_attempts="2"
    )
    config = index_config(tmp_path, section)
    cloudpypi("adduser", "alice", "--password-stdin", config=config, stdin=PASSWORD + "\n")
    wheel = make_wheel(str(tmp_path), "small-one", "1.0")
    server = start_server(config)
    try:
        proxy.cut()  # an S3 endpoint on a closed port
        failed = twine_upload(server.url, wheel, tmp_path, check=False)
        assert "503" in failed.stdout and "Storage unavailable" in failed.stdout, failed.stdout
        assert file_rows(tmp_path) == 0
        proxy.resume()
        twine_upload(server.url, wheel, tmp_path)
        assert file_rows(tmp_path) == 1
    finally:
        server.stop()
        proxy.close()


# -- a misconfigured backend fails check-config and serve, naming the key -------------------


def _bad_s3_bucket(request, tmp_path):
    moto = request.getfixturevalue("moto_s3")
    return s3_moto_section(moto, "no-such-bucket-here"), "bucket"


def _bad_s3_credentials(request, tmp_path):
    moto = request.getfixturevalue("moto_s3_auth")
    moto.client().create_bucket(Bucket="guarded")
    return s3_moto_section(moto, "guarded", secret_access_key="wrong-secret"), "access_key_id"


def _unreachable_s3(request, tmp_path):
    moto = request.getfixturevalue("moto_s3")
    section = s3_moto_section(
        moto,
        "any-bucket",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        max_attempts="1",
        connect_timeout="2",
    )
    return section, "endpoint_url"


def _bad_swift_key(request, tmp_path):
    swift = request.getfixturevalue("swift_service")
    return swift_section(swift, "any-container", key="wrong-key"), "key"


def _unreachable_swift(request, tmp_path):
    swift = request.getfixturevalue("swift_service")
    section = swift_section(
        swift, "any-container", auth_url=f"http://127.0.0.1:{free_port()}/auth/v1.0", retries="0", timeout="3"
    )
    return section, "auth_url"


BAD = {
    "s3-wrong-bucket": _bad_s3_bucket,
    "s3-bad-credentials": _bad_s3_credentials,
    "s3-unreachable": _unreachable_s3,
    "swift-bad-key": _bad_swift_key,
    "swift-unreachable": _unreachable_swift,
}


@pytest.mark.parametrize("case", list(BAD))
def test_misconfigured_storage_fails_check_config_and_serve(case, request, tmp_path):
    section, key = BAD[case](request, tmp_path)
    config = index_config(tmp_path, section)

    checked = cloudpypi("check-config", config=config, check=False)
    assert checked.returncode != 0
    assert "configuration error" in checked.stderr and "[storage]" in checked.stderr
    assert key in checked.stderr.split("configuration error", 1)[1], checked.stderr
    assert "Traceback" not in checked.stderr
    assert "wrong-secret" not in checked.stdout + checked.stderr
    assert "wrong-key" not in checked.stdout + checked.stderr

    served = subprocess.run(
        [*CLOUDPYPI, "serve", "--config", config, "--host", "127.0.0.1", "--port", str(free_port())],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert served.returncode != 0
    assert "configuration error" in served.stderr and key in served.stderr, served.stderr
    assert "Traceback" not in served.stderr
