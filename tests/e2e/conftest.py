"""A live ``cloudpypi serve`` per test module, on SQLite and on a real PostgreSQL,
and the real clients the end-to-end tests drive against it."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.clients import PASSWORD, build_dists, tool_venv, twine_version, write_setuptools_project
from tests.services.live_server import LiveServer, cloudpypi, start_server, write_config

#: The tiny project built once per session with ``python -m build``.
DEMO_NAME = "Cloud-Demo"
DEMO_MODULE = "cloud_demo"
DEMO_VERSION = "1.0"


@dataclass
class Live:
    """A running index: its URL, config file, data folder and users (password PASSWORD)."""

    server: LiveServer
    database: str
    folder: Path
    users: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def legacy(self) -> str:
        return self.server.url + "/legacy/"

    @property
    def simple(self) -> str:
        return self.server.url + "/simple/"

    @property
    def config(self) -> str:
        return self.server.config

    def cli(self, *args: str, stdin: str | None = None, check: bool = True):
        """Run a ``cloudpypi`` sub-command on this index's config."""
        return cloudpypi(*args, config=self.config, stdin=stdin, check=check)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """``cloudpypi serve`` on a new, empty database, with users alice and bob (made by ``adduser``)."""
    folder = tmp_path_factory.mktemp(f"live-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{folder}/index.sqlite3"
    else:
        url = request.getfixturevalue("postgres_server").new_database()
    config = write_config(
        str(folder / "config.ini"),
        {
            "server": {"data_dir": str(folder / "data")},
            "database": {"url": url},
            "storage": {"backend": "local"},
        },
    )
    server = start_server(config)
    index = Live(server, request.param, folder)
    try:
        for user in ("alice", "bob"):
            index.cli("adduser", user, "--password-stdin", stdin=PASSWORD + "\n")
            index.users.append(user)
        yield index
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tools_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where virtualenvs of tools from the registry are kept between runs (pytest's cache
    folder; a temporary one when the cache is turned off)."""
    cache = getattr(request.config, "cache", None)
    return Path(cache.mkdir("e2e-tools")) if cache is not None else tmp_path_factory.mktemp("e2e-tools")


@pytest.fixture(scope="session")
def demo_dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, sdist) of a tiny pyproject.toml project, built by ``python -m build --no-isolation``."""
    root = tmp_path_factory.mktemp("demo-build")
    project = write_setuptools_project(root / "src", DEMO_NAME, DEMO_MODULE, DEMO_VERSION)
    return build_dists(project, root / "dist")


@pytest.fixture(scope="session")
def twine_old(tools_cache: Path) -> list[str]:
    """A twine that still allows ``--skip-existing`` for any index (twine < 6.2)."""
    version = twine_version(sys.executable)
    if version is not None and version < (6, 2):
        return [sys.executable, "-m", "twine"]
    return [str(tool_venv(tools_cache, "twine-6.1", "twine<6.2") / "twine")]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """On a failure, show the end of the live server's log beside the test's output."""
    outcome = yield
    report = outcome.get_result()
    index = getattr(item, "funcargs", {}).get("live")
    if report.failed and isinstance(index, Live):
        report.sections.append((f"cloudpypi serve log ({index.database})", index.server.log()[-8000:]))
