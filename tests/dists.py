"""Builds small, valid wheels and sdists for tests (no build backend needed)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
import zipfile

from packaging.utils import canonicalize_name


def dist_name(name: str) -> str:
    """The name as it appears in a file name (PEP 625 / the wheel spec)."""
    return canonicalize_name(name).replace("-", "_")


def metadata_text(
    name: str,
    version: str,
    *,
    summary: str = "A test package",
    requires_python: str | None = None,
    description: str = "",
    description_content_type: str = "text/markdown",
) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", f"Summary: {summary}"]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    lines.append(f"Description-Content-Type: {description_content_type}")
    return "\n".join(lines) + "\n\n" + description


def make_wheel(
    directory: str,
    name: str,
    version: str,
    *,
    module_code: str | None = None,
    metadata: str | None = None,
    extra_bytes: int = 0,
    tag: str = "py3-none-any",
    requires_python: str | None = None,
) -> str:
    """Write ``<name>-<version>-<tag>.whl`` into ``directory``; return its path.

    The wheel installs a module named after the project whose ``VERSION`` is
    the version. ``extra_bytes`` adds an incompressible data file of that size.
    """
    dn = dist_name(name)
    filename = f"{dn}-{version}-{tag}.whl"
    path = os.path.join(directory, filename)
    dist_info = f"{dn}-{version}.dist-info"
    files = {
        f"{dn}/__init__.py": (module_code or f"VERSION = {version!r}\n").encode(),
        f"{dist_info}/METADATA": (
            metadata or metadata_text(name, version, requires_python=requires_python)
        ).encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: cloudpypi-tests\nRoot-Is-Purelib: true\nTag: "
        + tag.encode()
        + b"\n",
    }
    if extra_bytes:
        files[f"{dn}/blob.bin"] = os.urandom(extra_bytes)
    record = []
    for arcname, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{arcname},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED if extra_bytes else zipfile.ZIP_DEFLATED) as zf:
        for arcname, data in files.items():
            zf.writestr(arcname, data)
    return path


def make_sdist(directory: str, name: str, version: str, *, with_pkg_info: bool = True) -> str:
    """Write ``<name>-<version>.tar.gz`` with a PKG-INFO; return its path."""
    dn = dist_name(name)
    top = f"{dn}-{version}"
    path = os.path.join(directory, f"{top}.tar.gz")
    members = {f"{top}/setup.py": b"from setuptools import setup\nsetup()\n"}
    if with_pkg_info:
        members[f"{top}/PKG-INFO"] = metadata_text(name, version).encode()
    with tarfile.open(path, "w:gz") as tf:
        for arcname, data in members.items():
            info = tarfile.TarInfo(arcname)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def digests(path: str) -> dict[str, str]:
    with open(path, "rb") as f:
        data = f.read()
    return {
        "md5_digest": hashlib.md5(data).hexdigest(),
        "sha256_digest": hashlib.sha256(data).hexdigest(),
        "blake2_256_digest": hashlib.blake2b(data, digest_size=32).hexdigest(),
    }
