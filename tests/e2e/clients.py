"""Running the real clients (twine, pip, uv, distutils, bandersnatch) against a live server.

Every client runs as a subprocess with an environment of its own: no pip,
twine or uv settings of this machine leak in (the machine's pip config may
point at a local mirror), HOME is a temporary folder, and pip's cache is off.
Tools that are not in the project's virtualenv are installed from the package
registry into virtualenvs kept in pytest's cache folder, once per machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

#: Variables that would steer a client towards this machine's settings.
_LEAKY_PREFIXES = ("PIP_", "TWINE_", "UV_", "CLOUDPYPI_", "PYTHON", "VIRTUAL_ENV", "SETUPTOOLS_")
PASSWORD = "correct horse battery"


class ClientFailed(AssertionError):
    pass


def client_env(home: Path | str | None = None, **extra: str) -> dict[str, str]:
    """os.environ without pip/twine/uv/python settings; pip reads no config file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY_PREFIXES)}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
        UV_NO_CONFIG="1",
        UV_NO_CACHE="1",
        UV_PYTHON_DOWNLOADS="never",
    )
    if home is not None:
        env["HOME"] = str(home)
    env.update(extra)
    return env


def run(
    cmd: Sequence[str | os.PathLike],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    check: bool = True,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """Run ``cmd``, stdout and stderr together in ``.stdout``; ClientFailed (with the output) if it fails."""
    result = subprocess.run(
        [str(c) for c in cmd],
        env=dict(env) if env is not None else client_env(),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise ClientFailed(f"{' '.join(map(str, cmd))} exited {result.returncode}:\n{result.stdout[-6000:]}")
    return result


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def bin_dir(venv: Path) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin")


def fresh_venv(path: Path) -> Path:
    """``python -m venv PATH`` (with pip); return the venv's python."""
    run([sys.executable, "-m", "venv", path])
    return bin_dir(path) / "python"


# -- tools from the package registry ------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def tool_venv(cache: Path, name: str, *requirements: str) -> Path:
    """A virtualenv in ``cache`` with ``requirements`` installed; its bin folder.

    Installed with this machine's ordinary pip settings (the registry), once:
    a stamp naming the requirements marks a finished install. Skips the
    calling test, with pip's own words, when the registry cannot provide them.
    """
    venv = cache / name
    stamp = venv / "cloudpypi-e2e-installed"
    wanted = "\n".join(requirements)
    with _locked(cache / f"{name}.lock"):
        if stamp.exists() and stamp.read_text() == wanted and (bin_dir(venv) / "python").exists():
            return bin_dir(venv)
        shutil.rmtree(venv, ignore_errors=True)
        # The machine's pip configuration is kept here: it is how the registry is reached.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
        made = subprocess.run(
            [sys.executable, "-m", "venv", str(venv)], env=env, capture_output=True, text=True
        )
        installed = made.returncode == 0 and subprocess.run(
            [str(bin_dir(venv) / "python"), "-m", "pip", "install", "-q", *requirements],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if made.returncode != 0 or not installed or installed.returncode != 0:
            output = (made.stdout + made.stderr) if made.returncode else (installed.stdout + installed.stderr)
            shutil.rmtree(venv, ignore_errors=True)
            pytest.skip(
                f"cannot install {' '.join(requirements)} from the package registry: {output.strip()[-1500:]}"
            )
        stamp.write_text(wanted)
    return bin_dir(venv)


def twine_version(python: Path | str) -> tuple[int, ...] | None:
    found = run([python, "-c", "import twine; print(twine.__version__)"], check=False)
    if found.returncode != 0:
        return None
    return tuple(int(p) for p in found.stdout.strip().split(".")[:2] if p.isdigit())


# -- the tiny projects ----------------------------------------------------------


def write_setuptools_project(folder: Path, name: str, module: str, version: str) -> Path:
    """A pyproject.toml project whose version comes from ``module.VERSION``."""
    folder.mkdir(parents=True)
    (folder / module).mkdir()
    (folder / module / "__init__.py").write_text(f'"""A tiny module."""\n\nVERSION = "{version}"\n')
    (folder / "README.md").write_text(f"# {name}\n\nA *tiny* package uploaded by the end-to-end tests.\n")
    (folder / "pyproject.toml").write_text(
        textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{name}"
        dynamic = ["version"]
        description = "A tiny package for CloudPyPI's end-to-end tests"
        readme = "README.md"
        requires-python = ">=3.8"
        authors = [{{name = "Alice Example", email = "alice@example.org"}}]
        classifiers = ["Programming Language :: Python :: 3", "Topic :: Software Development"]

        [project.urls]
        Homepage = "https://example.org/{module}"

        [tool.setuptools]
        packages = ["{module}"]

        [tool.setuptools.dynamic]
        version = {{attr = "{module}.VERSION"}}
        """)
    )
    return folder


def build_dists(project: Path, outdir: Path) -> tuple[Path, Path]:
    """``python -m build --no-isolation --wheel --sdist``; (wheel, sdist)."""
    run(
        [sys.executable, "-m", "build", "--no-isolation", "--wheel", "--sdist", "--outdir", outdir, project],
        env=client_env(home=project.parent),
        cwd=project,
    )
    wheels = sorted(outdir.glob("*.whl"))
    sdists = sorted(outdir.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in outdir.iterdir())
    return wheels[0], sdists[0]


def twine_upload(
    repository_url: str,
    *files: str | os.PathLike,
    home: Path | None = None,
    user: str = "alice",
    password: str = PASSWORD,
    twine: Sequence[str | os.PathLike] | None = None,
    extra: Sequence[str] = (),
    check: bool = False,
) -> subprocess.CompletedProcess:
    """``twine upload`` of ``files`` to ``repository_url`` (the legacy upload URL), as a user does."""
    command = list(twine or [sys.executable, "-m", "twine"])
    return run(
        [
            *command,
            "upload",
            "--non-interactive",
            "--disable-progress-bar",
            "--repository-url",
            repository_url,
            "-u",
            user,
            "-p",
            password,
            *extra,
            *map(str, files),
        ],
        env=client_env(home=home),
        check=check,
    )
