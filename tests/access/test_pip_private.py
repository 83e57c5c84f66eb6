"""Real clients against a live ``cloudpypi serve``: twine uploading with scoped tokens, pip
installing a private package with credentials in the URL, with .netrc and with a read token,
and failing cleanly without them (on a public index and on ``read = authenticated``)."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.dists import make_wheel
from tests.e2e.clients import PASSWORD, client_env, run, twine_upload
from tests.services.live_server import cloudpypi, start_server, write_config

pytestmark = pytest.mark.e2e

NAME = "Private-Demo"
MODULE = "private_demo"


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    folder = tmp_path_factory.mktemp("private-index")
    sections = {
        "server": {"data_dir": str(folder / "data")},
        "database": {"url": f"sqlite:///{folder}/index.sqlite3"},
        "storage": {"backend": "local"},
    }
    config = write_config(str(folder / "config.ini"), sections)
    closed = write_config(str(folder / "closed.ini"), {**sections, "access": {"read": "authenticated"}})
    for user in ("alice", "bob", "eve"):
        cloudpypi("adduser", user, "--password-stdin", config=config, stdin=PASSWORD + "\n")
    server = start_server(config)
    closed_server = start_server(closed)
    try:
        yield {"config": config, "url": server.url, "closed": closed_server.url, "folder": folder}
    finally:
        server.stop()
        closed_server.stop()


def _token(config: str, *args: str) -> str:
    out = cloudpypi("token", "create", *args, config=config).stdout.splitlines()
    assert out[0].startswith("token ") and "shown once" in out[0]
    return out[1].strip()


def _twine(url: str, user: str, password: str, *files: str, check: bool = True):
    return twine_upload(url + "/legacy/", *files, user=user, password=password, check=check)


def _pip(index_url: str, target: Path, *, home: Path | None = None, check: bool = True):
    return run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            "--no-deps",
            "--target",
            target,
            "--index-url",
            index_url,
            NAME,
        ],
        env=client_env(home=home),
        check=check,
        timeout=120,
    )


def _with(url: str, user: str, password: str) -> str:
    return url.replace("http://", f"http://{user}:{password}@") + "/simple/"


@pytest.fixture(scope="module")
def private(index, tmp_path_factory):
    """Private-Demo uploaded by twine with a token scoped to it, made private; bob is a reader."""
    dists = tmp_path_factory.mktemp("private-dists")
    token = _token(index["config"], "alice", "--scope", "upload:private-demo", "--expires", "30")
    _twine(index["url"], "__token__", token, make_wheel(str(dists), NAME, "1.0"))
    other = _twine(index["url"], "__token__", token, make_wheel(str(dists), "Other-Demo", "1.0"), check=False)
    said = " ".join(other.stdout.split())  # twine wraps its message
    assert other.returncode != 0
    assert "403" in said and "(upload:private-demo) may not upload to project 'Other-Demo'" in said
    out = cloudpypi("visibility", NAME, "private", config=index["config"]).stdout
    assert "is now private" in out
    cloudpypi("addrole", NAME, "bob", "reader", config=index["config"])
    listed = cloudpypi("token", "list", "alice", config=index["config"]).stdout
    assert "upload:private-demo" in listed and token not in listed
    return index


def _installed(target: Path) -> str:
    return (target / MODULE / "__init__.py").read_text()


def test_pip_installs_with_credentials_in_the_url(private, tmp_path):
    _pip(_with(private["url"], "bob", PASSWORD), tmp_path / "t")
    assert "VERSION = '1.0'" in _installed(tmp_path / "t")


def test_pip_installs_with_netrc(private, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text(f'machine 127.0.0.1\nlogin bob\npassword "{PASSWORD}"\n')
    netrc.chmod(0o600)
    _pip(private["url"] + "/simple/", tmp_path / "t", home=home)
    assert "VERSION" in _installed(tmp_path / "t")


def test_pip_installs_with_a_read_token(private, tmp_path):
    token = _token(private["config"], "bob", "--scope", "read:private-demo")
    _pip(_with(private["url"], "__token__", token), tmp_path / "t")
    assert "VERSION" in _installed(tmp_path / "t")


def test_pip_fails_cleanly_without_credentials_or_without_a_role(private, tmp_path):
    for url in (private["url"] + "/simple/", _with(private["url"], "eve", PASSWORD)):
        r = _pip(url, tmp_path / "t", check=False)
        assert r.returncode != 0
        assert "No matching distribution found for Private-Demo" in r.stdout
        assert "Traceback" not in r.stdout
    assert not (tmp_path / "t" / MODULE).exists()


def test_a_closed_index_needs_credentials_for_pip(private, tmp_path):
    r = _pip(private["closed"] + "/simple/", tmp_path / "t", check=False)
    assert r.returncode != 0 and "No matching distribution" in r.stdout and "Traceback" not in r.stdout
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(private["closed"] + "/simple/private-demo/", timeout=10)
    assert refused.value.code == 401 and refused.value.headers["WWW-Authenticate"] == 'Basic realm="pypi"'
    _pip(_with(private["closed"], "bob", PASSWORD), tmp_path / "t")
    assert "VERSION" in _installed(tmp_path / "t")


def test_revoked_tokens_stop_working(private, tmp_path):
    token = _token(private["config"], "bob", "--scope", "read")
    listed = cloudpypi("token", "list", "bob", config=private["config"]).stdout.splitlines()
    token_id = listed[-1].split("\t")[0]
    out = cloudpypi("token", "revoke", token_id, config=private["config"]).stdout
    assert f"token {token_id} revoked" in out
    r = _pip(_with(private["url"], "__token__", token), tmp_path / "t", check=False)
    assert r.returncode != 0 and "Traceback" not in r.stdout
    bad = cloudpypi("token", "revoke", "99999", config=private["config"], check=False)
    assert bad.returncode == 1 and "no token with id 99999" in bad.stderr
