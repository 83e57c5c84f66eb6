"""Checks on a distribution file's name and contents (wheel and sdist).

Each check raises InvalidFile with a message that names the problem, in
pypi.org's wording where it has one.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from typing import IO

from packaging.metadata import RawMetadata, parse_email
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
#: The most a wheel's METADATA or an sdist's PKG-INFO may inflate to: it is read
#: into memory, in chunks, and refused as soon as it passes this.
MAX_METADATA = 10 * 1024 * 1024
#: Bytes inflated per read, so a member that lies about its size costs no more memory.
READ_CHUNK = 64 * 1024
#: The longest filename (UTF-8 bytes): ``<filename>.metadata`` and the local
#: backend's ``.cloudpypi-meta`` sidecar must still fit a 255-byte file name.
MAX_FILENAME_BYTES = 230
#: An archive may inflate to at most this many times its compressed size once it
#: is over COMPRESSION_RATIO_MIN_SIZE (pypi.org's zip-bomb rule, applied to tar.gz too).
COMPRESSION_RATIO_THRESHOLD = 50
COMPRESSION_RATIO_MIN_SIZE = 64 * 1024 * 1024
#: The most members an archive may have (their headers are kept in memory).
MAX_MEMBERS = 100_000


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
    if len(filename.encode("utf-8", "surrogatepass")) > MAX_FILENAME_BYTES:
        raise InvalidFile(f"Filename is too long: '{filename}' (the limit is {MAX_FILENAME_BYTES} bytes).")
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
    expected = canonicalize_name(project).replace("-", "_")
    if canonicalize_name(name) != canonicalize_name(project):
        raise InvalidFile(f"Start filename for {project!r} with {expected!r}.")
    name_in_file = filename.split("-", 1)[0]
    if not name_in_file.isascii():
        # Matches only after Unicode case folding (the Kelvin sign lowers to "k"):
        # the name part must be the project's own ASCII spelling.
        raise InvalidFile(
            f"Filename {filename!r} should contain the normalized project name "
            f"{expected!r}, not {name_in_file!r}."
        )
    if filetype == "bdist_wheel":
        for tag in _tags:
            if not valid_platform_tag(tag.platform):
                raise InvalidFile(
                    f"Binary wheel '{filename}' has an unsupported platform tag '{tag.platform}'."
                )
    if file_version != version:
        raise InvalidFile(f"Version in filename should be {str(version)!r} not {str(file_version)!r}.")


# -- wheel platform tags: the ones pypi.org accepts ------------------------------

_PLATFORMS = frozenset(
    "any win32 win_arm64 win_amd64 win_ia64 linux_armv6l linux_armv7l".split()
    + [f"manylinux1_{a}" for a in ("x86_64", "i686")]
    + [f"manylinux2010_{a}" for a in ("x86_64", "i686")]
    + [f"manylinux2014_{a}" for a in "x86_64 i686 aarch64 armv7l ppc64 ppc64le s390x".split()]
)
_LINUX_ARCHES = frozenset("x86_64 i686 aarch64 armv7l ppc64le s390x riscv64".split())
_MACOS_ARCHES = frozenset("ppc ppc64 i386 x86_64 arm64 intel fat fat3 fat64 universal universal2".split())
#: macOS 11 and later name releases ``macosx_<major>_0``; 10.x is ``macosx_10_<minor>``.
_MACOS_MAJORS = frozenset("11 12 13 14 15 26".split())
_PLATFORM_PATTERNS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], bool]]] = [
    (
        re.compile(r"macosx_(\d+)_(\d+)_(.+)"),
        lambda m: m[3] in _MACOS_ARCHES and (m[1] == "10" or (m[1] in _MACOS_MAJORS and m[2] == "0")),
    ),
    (re.compile(r"manylinux_\d+_\d+_(.+)"), lambda m: m[1] in _LINUX_ARCHES | {"ppc64"}),
    (re.compile(r"musllinux_\d+_\d+_(.+)"), lambda m: m[1] in _LINUX_ARCHES),
    (re.compile(r"ios_\d+_\d+_(.+)_(?:iphoneos|iphonesimulator)"), lambda m: m[1] in {"arm64", "x86_64"}),
    (
        re.compile(r"android_\d+_(.+)"),
        lambda m: m[1] in {"armeabi_v7a", "arm64_v8a", "x86", "x86_64"},
    ),
    (re.compile(r"pyemscripten_\d+_\d+_wasm32"), lambda m: True),
]


def valid_platform_tag(platform: str) -> bool:
    """Whether pypi.org accepts a wheel for ``platform`` (a tag's third part)."""
    if platform in _PLATFORMS:
        return True
    for pattern, accept in _PLATFORM_PATTERNS:
        m = pattern.fullmatch(platform)
        if m:
            return accept(m)
    return False


# -- archive members: names, links, sizes -------------------------------------------


def _unsafe_path(name: str) -> bool:
    """Absolute (POSIX or Windows), or with a ``..`` part: it would land outside the archive."""
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return True
    return ".." in re.split(r"[/\\]", name)


def _check_name(name: str, filename: str) -> None:
    if _unsafe_path(name):
        raise InvalidFile(
            f"Invalid distribution file. {filename} has a member with an unsafe path: {name!r}."
        )


def _check_link(name: str, target: str, filename: str, *, relative_to_member: bool) -> None:
    """A link must point at a path inside the archive."""
    base = posixpath.dirname(name) if relative_to_member else ""
    resolved = posixpath.normpath(posixpath.join(base, target.replace("\\", "/")))
    absolute = target.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", target)
    if absolute or resolved == ".." or resolved.startswith("../"):
        raise InvalidFile(
            f"Invalid distribution file. {filename} has a link pointing outside the archive: "
            f"{name!r} -> {target!r}."
        )


def _too_large(member: str, filename: str, limit: int) -> InvalidFile:
    return InvalidFile(
        f"Invalid distribution file. {member!r} in {filename} is larger than the limit of {limit} bytes."
    )


def read_bounded(stream: IO[bytes], limit: int, member: str, filename: str) -> bytes:
    """Read ``stream`` to its end in small chunks; InvalidFile as soon as it passes ``limit``.

    Inflating chunk by chunk keeps memory at ``limit`` whatever the member's header claims.
    """
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = stream.read(READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise _too_large(member, filename, limit)
        chunks.append(chunk)


def _check_ratio(inflated: int, compressed: int) -> None:
    if inflated > COMPRESSION_RATIO_MIN_SIZE and inflated > COMPRESSION_RATIO_THRESHOLD * max(compressed, 1):
        raise InvalidFile(
            f"Invalid distribution file. File exceeds compression ratio of {COMPRESSION_RATIO_THRESHOLD}"
        )


@contextlib.contextmanager
def _open_zip(
    path: str, filename: str, opener: Callable[[], IO[bytes]] | None = None
) -> Iterator[zipfile.ZipFile]:
    """The zip, once its end record says it has at most MAX_MEMBERS members: ZipFile builds
    every member's header in memory, so a zip of millions of empty members is refused first.

    One open file serves the end record, the central directory and the members read:
    nothing else of the archive is read (a 200 MB wheel costs its central directory and
    METADATA, not a pass over its bytes). ``opener`` opens the file instead of ``path`` (a
    spool that keeps only the file's tail and reads the rest back from the store).
    """
    with opener() if opener is not None else open(path, "rb") as f:
        end = zipfile._EndRecData(f)  # type: ignore[attr-defined]  # stable since Python 2
        if end is not None and end[zipfile._ECD_ENTRIES_TOTAL] > MAX_MEMBERS:  # type: ignore[attr-defined]
            raise InvalidFile(f"Invalid distribution file. {filename} has more than {MAX_MEMBERS} members.")
        with zipfile.ZipFile(f) as zf:
            yield zf


def _zip_members(zf: zipfile.ZipFile, path: str, filename: str) -> list[zipfile.ZipInfo]:
    """Every member, checked: safe names, no links out, known compression, sane ratio."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise InvalidFile(f"Invalid distribution file. {filename} has more than {MAX_MEMBERS} members.")
    _check_ratio(sum(i.file_size for i in infos), os.path.getsize(path))
    for info in infos:
        _check_name(info.filename, filename)
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise InvalidFile(
                "Invalid distribution file. File does not use a supported compression type: "
                f"{info.filename!r}."
            )
        if stat.S_ISLNK(info.external_attr >> 16):
            with zf.open(info) as member:
                target = read_bounded(member, 4096, info.filename, filename)
            _check_link(info.filename, target.decode("utf-8", "replace"), filename, relative_to_member=True)
    return infos


def _read_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, filename: str) -> bytes:
    if info.file_size > MAX_METADATA:
        raise _too_large(info.filename, filename, MAX_METADATA)
    with zf.open(info) as member:
        return read_bounded(member, MAX_METADATA, info.filename, filename)


def _tar_members(tf: tarfile.TarFile, path: str, filename: str) -> Iterator[tarfile.TarInfo]:
    """Every member, checked, without keeping their headers (memory stays flat)."""
    limit = max(COMPRESSION_RATIO_MIN_SIZE, COMPRESSION_RATIO_THRESHOLD * os.path.getsize(path))
    count = 0
    while True:
        member = tf.next()
        if member is None:
            return
        tf.members.clear()  # tarfile keeps every header read; we never look back
        count += 1
        if count > MAX_MEMBERS:
            raise InvalidFile(f"Invalid distribution file. {filename} has more than {MAX_MEMBERS} members.")
        # The next header is read after this member's data: refuse before inflating past the limit.
        if member.offset_data + member.size > limit:
            _check_ratio(member.offset_data + member.size, os.path.getsize(path))
        _check_name(member.name, filename)
        if member.issym():
            _check_link(member.name, member.linkname, filename, relative_to_member=True)
        elif member.islnk():
            _check_link(member.name, member.linkname, filename, relative_to_member=False)
        elif not (member.isfile() or member.isdir()):
            raise InvalidFile(
                "Invalid distribution file. tar archive not accepted: "
                f"{member.name!r} is not a regular file, folder or link."
            )
        elif member.issparse():
            raise InvalidFile(
                "Invalid distribution file. tar archive not accepted: Sparse members are not allowed."
            )
        yield member


def wheel_metadata(
    path: str,
    filename: str,
    project: str,
    version: Version,
    *,
    opener: Callable[[], IO[bytes]] | None = None,
) -> bytes:
    """The wheel's ``.dist-info/METADATA``, checked against the upload's name and version.

    Every member is checked (see ``_zip_members``); METADATA is read as a bounded
    stream (MAX_METADATA).
    """
    return wheel_metadata_parsed(path, filename, project, version, opener=opener)[0]


def wheel_metadata_parsed(
    path: str,
    filename: str,
    project: str,
    version: Version,
    *,
    opener: Callable[[], IO[bytes]] | None = None,
) -> tuple[bytes, RawMetadata]:
    """``wheel_metadata`` and its parsed fields (parsed once, for a caller that reads them too)."""
    try:
        with _open_zip(path, filename, opener) as zf:
            infos = _zip_members(zf, path, filename)
            candidates = [i for i in infos if re.fullmatch(r"[^/]+\.dist-info/METADATA", i.filename)]
            if len(candidates) != 1:
                raise InvalidFile(
                    f"Wheel '{filename}' does not contain the required METADATA file: "
                    "<name>-<version>.dist-info/METADATA"
                )
            data = _read_zip_member(zf, candidates[0], filename)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error) as exc:
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
    return data, raw


def check_sdist(path: str, filename: str) -> bytes:
    """A readable archive with a PKG-INFO in its top folder, as pypi.org requires; its PKG-INFO.

    Every member is checked (names, links, types, size against the compressed
    file); PKG-INFO is read as a bounded stream (MAX_METADATA).
    """
    try:
        if filename.endswith(".zip"):
            with _open_zip(path, filename) as zf:
                infos = _zip_members(zf, path, filename)
                found = [i for i in infos if re.fullmatch(r"[^/]+/PKG-INFO", i.filename)]
                if not found:
                    raise InvalidFile(f"Invalid distribution file. {filename} has no PKG-INFO.")
                return _read_zip_member(zf, found[0], filename)
        pkg_info: bytes | None = None
        with tarfile.open(path, "r:gz") as tf:
            for member in _tar_members(tf, path, filename):
                top_pkg_info = re.fullmatch(r"(\./)?[^/]+/PKG-INFO", member.name)
                if pkg_info is None and member.isfile() and top_pkg_info:
                    if member.size > MAX_METADATA:
                        raise _too_large(member.name, filename, MAX_METADATA)
                    stream = tf.extractfile(member)
                    assert stream is not None  # a regular file
                    pkg_info = read_bounded(stream, MAX_METADATA, member.name, filename)
        if pkg_info is None:
            raise InvalidFile(f"Invalid distribution file. {filename} has no PKG-INFO.")
        return pkg_info
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise InvalidFile(f"Invalid distribution file. {filename} is not a valid archive ({exc}).") from None
