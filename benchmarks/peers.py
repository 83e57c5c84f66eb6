"""Installs the peers: pypiserver and devpi in their own virtualenvs, nginx and wrk from Debian.

Each virtualenv lives under ``.work/venvs/NAME`` and is reused while its
requirements are unchanged (a stamp file records them).
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from benchmarks import WORK
from benchmarks.procs import run

VENVS = os.path.join(WORK, "venvs")

#: venv name -> requirements. "pypiserver" as its container installs it (gunicorn, gevent,
#: passlib and watchdog for its listing cache); "pypiserver-plain" as its README's gunicorn
#: section runs it (``pip install pypiserver gunicorn``; no cache extra).
REQUIREMENTS: dict[str, list[str]] = {
    "pypiserver": ["pypiserver[cache,passlib]>=2,<3", "gunicorn>=23,<24", "gevent"],
    "pypiserver-plain": ["pypiserver>=2,<3", "gunicorn>=23,<24"],
    "devpi": ["devpi-server", "devpi-client"],
}
#: Debian packages for the tools found on PATH.
APT: dict[str, str] = {"nginx": "nginx-light", "wrk": "wrk"}
#: Where Debian puts nginx when /usr/sbin is not on PATH.
NGINX_PATHS = ("/usr/sbin/nginx",)


def venv_bin(name: str, program: str) -> str:
    return os.path.join(VENVS, name, "bin", program)


def _base_python() -> str:
    """A Python to build virtualenvs from: the one running this, outside any venv."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return base if os.path.exists(base) else sys.executable


def ensure_venv(name: str, log=print) -> str:
    """The venv's folder, created and installed if its requirements changed."""
    folder = os.path.join(VENVS, name)
    stamp = os.path.join(folder, ".requirements.json")
    wanted = REQUIREMENTS[name]
    try:
        with open(stamp) as f:
            if json.load(f) == wanted:
                return folder
    except (OSError, ValueError):
        pass
    log(f"installing {name}: {' '.join(wanted)}")
    shutil.rmtree(folder, ignore_errors=True)
    run([_base_python(), "-m", "venv", folder], timeout=120)
    pip = [os.path.join(folder, "bin", "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    run([*pip, "--upgrade", "pip"], timeout=300)
    run([*pip, *wanted], timeout=600)
    with open(stamp, "w") as f:
        json.dump(wanted, f)
    return folder


def which(program: str) -> str | None:
    found = shutil.which(program)
    if found:
        return found
    if program == "nginx":
        return next((p for p in NGINX_PATHS if os.path.exists(p)), None)
    return None


def ensure_apt(log=print) -> dict[str, str]:
    """nginx and wrk, installed with apt-get when missing; program -> path."""
    missing = [APT[p] for p in APT if which(p) is None]
    if missing:
        if os.geteuid() != 0:
            raise RuntimeError(f"install {' '.join(missing)} (apt-get needs root)")
        log(f"installing with apt-get: {' '.join(missing)}")
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-qq"], timeout=300, env=env)
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], timeout=600, env=env)
    paths = {p: which(p) for p in APT}
    absent = [p for p, path in paths.items() if path is None]
    if absent:
        raise RuntimeError(f"not found after installing: {', '.join(absent)}")
    return paths  # type: ignore[return-value]


def ensure_all(log=print) -> dict[str, str]:
    """Every peer installed; returns their versions for the report."""
    tools = ensure_apt(log)
    for name in REQUIREMENTS:
        ensure_venv(name, log)
    return versions(tools)


def _pip_version(venv: str, dist: str) -> str:
    out = run(
        [
            os.path.join(VENVS, venv, "bin", "python"),
            "-c",
            f"import importlib.metadata as m; print(m.version({dist!r}))",
        ],
        timeout=60,
    )
    return out.stdout.strip()


def versions(tools: dict[str, str]) -> dict[str, str]:
    found = {
        "pypiserver": _pip_version("pypiserver", "pypiserver"),
        "gunicorn": _pip_version("pypiserver", "gunicorn"),
        "gevent": _pip_version("pypiserver", "gevent"),
        "devpi-server": _pip_version("devpi", "devpi-server"),
        "devpi-client": _pip_version("devpi", "devpi-client"),
    }
    nginx = run([tools["nginx"], "-v"], timeout=30)
    found["nginx"] = (nginx.stderr or nginx.stdout).strip().rpartition("/")[2]
    wrk = run([tools["wrk"], "-v"], timeout=30, check=False)
    found["wrk"] = (wrk.stdout or wrk.stderr).split()[1] if (wrk.stdout or wrk.stderr).split() else "?"
    return found
