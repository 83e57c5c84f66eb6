"""distutils, as package authors used it for years: ``setup.py register`` and ``sdist upload``
with a ``.pypirc``, on the Python 3.11 standard library's distutils."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.clients import PASSWORD, client_env, get_json, run, sha256_of
from tests.e2e.conftest import Live

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        sys.version_info >= (3, 12),
        reason=f"distutils left the standard library in Python 3.12 (this is {sys.version.split()[0]})",
    ),
]

NAME = "Dist-Demo"
REPOSITORY = "cloudpypi-e2e"


def distutils_env(home: Path) -> dict[str, str]:
    return client_env(home=home, SETUPTOOLS_USE_DISTUTILS="stdlib")


@pytest.fixture(scope="module", autouse=True)
def stdlib_distutils(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("distutils-check")
    found = subprocess.run(
        [
            sys.executable,
            "-W",
            "ignore",
            "-c",
            "import distutils.core, distutils.command.upload as u; print(distutils.core.__file__)",
        ],
        env=distutils_env(home),
        capture_output=True,
        text=True,
    )
    if found.returncode != 0 or "setuptools" in found.stdout:
        pytest.skip(f"no standard-library distutils in {sys.executable}: {found.stdout}{found.stderr}")


def make_project(folder: Path, live: Live, version: str) -> Path:
    """A distutils setup.py project, and a HOME whose .pypirc names the live index."""
    project = folder / "project"
    project.mkdir(parents=True)
    (project / "dist_demo.py").write_text(f'VERSION = "{version}"\n')
    (project / "setup.py").write_text(
        textwrap.dedent(f"""\
        from distutils.core import setup

        setup(
            name={NAME!r},
            version={version!r},
            description="Uploaded with distutils",
            long_description="Made by *setup.py register*.",
            author="Alice Example",
            author_email="alice@example.org",
            url="https://example.org/dist-demo",
            license="MIT",
            keywords="distutils legacy",
            classifiers=["Programming Language :: Python :: 3", "License :: OSI Approved :: MIT License"],
            py_modules=["dist_demo"],
        )
        """)
    )
    (folder / ".pypirc").write_text(
        textwrap.dedent(f"""\
        [distutils]
        index-servers =
            {REPOSITORY}

        [{REPOSITORY}]
        repository = {live.legacy}
        username = alice
        password = {PASSWORD}
        """)
    )
    return project


def setup_py(project: Path, *commands: str) -> str:
    result = run([sys.executable, "setup.py", *commands], env=distutils_env(project.parent), cwd=project)
    return result.stdout


def test_register_then_sdist_upload(live: Live, tmp_path: Path) -> None:
    project = make_project(tmp_path, live, "2.0")

    # register: sends its credentials only after the server's 401 challenge.
    out = setup_py(project, "register", "-r", REPOSITORY)
    assert "Server response (200): OK" in out, out
    body = get_json(f"{live.url}/pypi/{NAME}/2.0/json")
    info = body["info"]
    assert info["name"] == NAME and info["version"] == "2.0"
    assert info["summary"] == "Uploaded with distutils"
    assert info["description"] == "Made by *setup.py register*."
    assert info["author"] == "Alice Example"
    assert info["author_email"] == "alice@example.org"
    assert info["home_page"] == "https://example.org/dist-demo"
    assert info["license"] == "MIT"
    assert info["keywords"] == "distutils legacy"
    assert sorted(info["classifiers"]) == [
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
    ]
    assert body["urls"] == []

    out = setup_py(project, "sdist", "upload", "-r", REPOSITORY)
    assert "Server response (200): OK" in out, out
    sdist = project / "dist" / f"{NAME}-2.0.tar.gz"
    files = get_json(f"{live.url}/pypi/{NAME}/2.0/json")["urls"]
    assert [(f["filename"], f["packagetype"], f["digests"]["sha256"]) for f in files] == [
        (sdist.name, "sdist", sha256_of(sdist))
    ]


def test_register_sdist_upload_in_one_command(live: Live, tmp_path: Path) -> None:
    project = make_project(tmp_path, live, "2.1")
    out = setup_py(project, "register", "-r", REPOSITORY, "sdist", "upload", "-r", REPOSITORY)
    assert out.count("Server response (200): OK") == 2, out
    sdist = project / "dist" / f"{NAME}-2.1.tar.gz"
    body = get_json(f"{live.url}/pypi/{NAME}/json")
    assert body["info"]["version"] == "2.1"
    assert body["info"]["summary"] == "Uploaded with distutils"
    assert [f["digests"]["sha256"] for f in body["releases"]["2.1"]] == [sha256_of(sdist)]
    with urllib.request.urlopen(urllib.request.urljoin(live.url, body["releases"]["2.1"][0]["url"])) as r:
        assert r.read() == sdist.read_bytes()
