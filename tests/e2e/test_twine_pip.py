"""twine uploads a wheel and an sdist built by ``python -m build``; pip and uv install them back."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.clients import (
    PASSWORD,
    client_env,
    fresh_venv,
    get_json,
    run,
    sha256_of,
    tool_venv,
)
from tests.e2e.conftest import DEMO_MODULE, DEMO_NAME, DEMO_VERSION, Live

pytestmark = pytest.mark.e2e

TWINE = [sys.executable, "-m", "twine"]


@pytest.fixture(scope="module")
def uploaded(live: Live, demo_dists: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``twine upload`` of the built wheel and sdist; the JSON API's answer afterwards."""
    home = tmp_path_factory.mktemp("twine-home")
    out = run(
        [
            *TWINE,
            "upload",
            "--non-interactive",
            "--disable-progress-bar",
            "--repository-url",
            live.legacy,
            "-u",
            "alice",
            "-p",
            PASSWORD,
            *demo_dists,
        ],
        env=client_env(home=home),
    ).stdout
    assert "View at" in out or "Uploading" in out, out
    return get_json(f"{live.url}/pypi/{DEMO_NAME}/json")


def test_twine_upload_of_wheel_and_sdist(live: Live, uploaded: dict, demo_dists: tuple[Path, Path]) -> None:
    wheel, sdist = demo_dists
    info = uploaded["info"]
    assert info["name"] == DEMO_NAME
    assert info["version"] == DEMO_VERSION
    assert info["summary"] == "A tiny package for CloudPyPI's end-to-end tests"
    assert info["requires_python"] == ">=3.8"
    assert "Topic :: Software Development" in info["classifiers"]
    assert info["description_content_type"] == "text/markdown"
    assert "*tiny* package" in info["description"]
    assert info["project_urls"]["Homepage"] == f"https://example.org/{DEMO_MODULE}"

    files = {f["filename"]: f for f in uploaded["releases"][DEMO_VERSION]}
    assert set(files) == {wheel.name, sdist.name}
    assert files[wheel.name]["packagetype"] == "bdist_wheel"
    assert files[sdist.name]["packagetype"] == "sdist"
    for path in (wheel, sdist):
        entry = files[path.name]
        assert entry["digests"]["sha256"] == sha256_of(path)
        assert entry["size"] == path.stat().st_size
        # The file the index serves is byte for byte the one twine sent.
        with urllib.request.urlopen(urllib.request.urljoin(live.url, entry["url"]), timeout=30) as r:
            assert r.read() == path.read_bytes()

    with urllib.request.urlopen(f"{live.simple}cloud-demo/", timeout=30) as r:
        page = r.read().decode()
    for path in (wheel, sdist):
        assert f"#sha256={sha256_of(path)}" in page
        assert f">{path.name}</a>" in page


def test_pip_install_into_fresh_venv(live: Live, uploaded: dict, tmp_path: Path) -> None:
    python = fresh_venv(tmp_path / "venv")
    env = client_env(home=tmp_path)
    pip = [python, "-m", "pip", "install", "--no-cache-dir", "--index-url", live.simple]
    out = run([*pip, DEMO_NAME], env=env).stdout
    assert f"successfully installed {DEMO_NAME.lower()}-{DEMO_VERSION}" in out.lower(), out
    # pip read the wheel's METADATA served beside it (PEP 658/714) before the wheel itself.
    assert ".whl.metadata" in out, out
    version = run([python, "-c", f"import {DEMO_MODULE}; print({DEMO_MODULE}.VERSION)"], env=env)
    assert version.stdout.strip() == DEMO_VERSION


def test_pip_download_verifies_hashes(live: Live, uploaded: dict, tmp_path: Path) -> None:
    """``pip download --require-hashes`` with the sha256 digests the JSON API gives, wheel and sdist."""
    by_type = {f["packagetype"]: f for f in uploaded["urls"]}
    hashes = " ".join(f"--hash=sha256:{f['digests']['sha256']}" for f in by_type.values())
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"{DEMO_NAME}=={DEMO_VERSION} {hashes}\n")
    download = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-cache-dir",
        "--require-hashes",
        "--index-url",
        live.simple,
        "-r",
        requirements,
    ]
    env = client_env(home=tmp_path)
    # The sdist's metadata is prepared with this virtualenv's setuptools (no index needed).
    no_binary = ["--no-binary", ":all:", "--no-build-isolation"]
    for packagetype, extra in (("bdist_wheel", []), ("sdist", no_binary)):
        dest = tmp_path / packagetype
        run([*download, *extra, "-d", dest], env=env)
        got = sorted(dest.iterdir())
        assert [p.name for p in got] == [by_type[packagetype]["filename"]]
        assert sha256_of(got[0]) == by_type[packagetype]["digests"]["sha256"]

    # pip really checks: a hash the index's file does not have is refused.
    requirements.write_text(f"{DEMO_NAME}=={DEMO_VERSION} --hash=sha256:{'0' * 64}\n")
    refused = run([*download, "-d", tmp_path / "bad"], env=env, check=False)
    assert refused.returncode != 0
    assert "DO NOT MATCH THE HASHES" in refused.stdout, refused.stdout


@pytest.fixture(scope="session")
def uv(tools_cache: Path) -> Path:
    return tool_venv(tools_cache, "uv", "uv") / "uv"


def test_uv_pip_install(live: Live, uploaded: dict, uv: Path, tmp_path: Path) -> None:
    """uv reads the index through the PEP 691 JSON API."""
    env = client_env(home=tmp_path)
    venv = tmp_path / "uv-venv"
    run([uv, "venv", "--python", sys.executable, venv], env=env)
    python = venv / "bin" / "python"
    run([uv, "pip", "install", "--python", python, "--index-url", live.simple, DEMO_NAME], env=env)
    version = run([python, "-c", f"import {DEMO_MODULE}; print({DEMO_MODULE}.VERSION)"], env=env)
    assert version.stdout.strip() == DEMO_VERSION
