"""Checks on a distribution file's name and contents (wheel and sdist).

Each check raises InvalidFile with a message that names the problem, in
pypi.org's wording where it has one.
"""

from __future__ import annotations

import re
import tarfile
import zipfile

from packaging.metadata import parse_email
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

#: filetype -> the extensions allowed for it.
EXTENSIONS = {"sdist": (".tar.gz", ".zip"), "bdist_wheel": (".whl",)}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: The most a wheel's METADATA may be: it is read into memory.
MAX_METADATA = 16 * 1024 * 1024


class InvalidFile(ValueError):
    """The file cannot be accepted; the message says why."""


def check_filename(filename: str, filetype: str) -> None:
    """Safe characters and an extension that fits the filetype."""
    if not filename:
        raise InvalidFile("Upload payload does not have a file name.")
    if "/" in filename or "\\" in filename:
        raise InvalidFile("Cannot upload a file with '/' or '\\' in the name.")
    if _CONTROL.search(filename):
        raise InvalidFile("Cannot upload a file with control characters in the name.")
    if filename.startswith("."):
        raise InvalidFile("Cannot upload a file whose name starts with '.'.")
    if not filename.endswith(EXTENSIONS.get(filetype, ())):
        allowed = ", ".join(EXTENSIONS.get(filetype, ()))
        raise InvalidFile(
            f"Invalid file extension: Use {allowed} for filetype {filetype!r}. "
            "See https://peps.python.org/pep-0527 for more information."
        )


def check_name_and_version(filename: str, filetype: str, project: str, version: Version) -> None:
    """The filename names this project (normalized, PEP 625 / wheel spec) and this version."""
    try:
        if filetype == "bdist_wheel":
            name, file_version, _build, _tags = parse_wheel_filename(filename)
        else:
            name, file_version = parse_sdist_filename(filename)
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion) as exc:
        raise InvalidFile(f"Invalid distribution file name {filename!r}: {exc}") from None
    if canonicalize_name(name) != canonicalize_name(project):
        raise InvalidFile(
            f"Start filename for {project!r} with {canonicalize_name(project).replace('-', '_')!r}."
        )
    if file_version != version:
        raise InvalidFile(f"Version in filename should be {str(version)!r} not {str(file_version)!r}.")


def wheel_metadata(path: str, filename: str, project: str, version: Version) -> bytes:
    """The wheel's ``.dist-info/METADATA``, checked against the upload's name and version."""
    try:
        with zipfile.ZipFile(path) as zf:
            candidates = [n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
            if len(candidates) != 1:
                raise InvalidFile(
                    f"Wheel '{filename}' does not contain the required METADATA file: "
                    "<name>-<version>.dist-info/METADATA"
                )
            info = zf.getinfo(candidates[0])
            if info.file_size > MAX_METADATA:
                raise InvalidFile(f"Wheel '{filename}' has a METADATA file that is too large.")
            data = zf.read(info)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise InvalidFile(f"Invalid distribution file. {filename} is not a valid zip file ({exc}).") from None
    raw, _unparsed = parse_email(data)
    meta_name = raw.get("name", "")
    if canonicalize_name(meta_name or "") != canonicalize_name(project):
        raise InvalidFile(
            f"The name in the wheel's METADATA ({meta_name!r}) does not match the project {project!r}."
        )
    try:
        meta_version = Version(raw.get("version", ""))
    except InvalidVersion:
        meta_version = None
    if meta_version != version:
        raise InvalidFile(
            f"The version in the wheel's METADATA ({raw.get('version', '')!r}) "
            f"does not match {str(version)!r}."
        )
    return data


def check_sdist(path: str, filename: str) -> None:
    """A readable archive with a PKG-INFO in its top folder, as pypi.org requires."""
    try:
        if filename.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                if not any(re.fullmatch(r"[^/]+/PKG-INFO", n) for n in names):
                    raise InvalidFile(f"Invalid distribution file. {filename} has no PKG-INFO.")
            return
        with tarfile.open(path, "r:gz") as tf:
            for member in tf:
                if re.fullmatch(r"(\./)?[^/]+/PKG-INFO", member.name):
                    return
        raise InvalidFile(f"Invalid distribution file. {filename} has no PKG-INFO.")
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InvalidFile(f"Invalid distribution file. {filename} is not a valid archive ({exc}).") from None
