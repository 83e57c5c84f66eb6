"""Builds hostile archives cheaply for tests: bombs with lying headers, members outside the tree."""

from __future__ import annotations

import gzip
import io
import os
import struct
import tarfile
import zipfile
from collections.abc import Mapping
from types import MappingProxyType

from tests.dists import dist_name, metadata_text


class Zeros(io.RawIOBase):
    """``size`` zero bytes, read in chunks (never held in memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def _patch_sizes(path: str, member: str, declared: int) -> None:
    """Make ``member``'s local and central headers claim ``declared`` uncompressed bytes."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
        start_dir = zf.start_dir
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 22)
        f.write(struct.pack("<I", declared))
        f.seek(start_dir)
        data = f.read()
        pos = 0
        while data[pos : pos + 4] == b"PK\x01\x02":
            n, m, k = struct.unpack("<HHH", data[pos + 28 : pos + 34])
            if data[pos + 46 : pos + 46 + n].decode() == member:
                f.seek(start_dir + pos + 24)
                f.write(struct.pack("<I", declared))
            pos += 46 + n + m + k


def bomb_wheel(directory: str, name: str, version: str, *, inflated: int, declared: int = 200) -> str:
    """A wheel whose METADATA header claims ``declared`` bytes but whose data inflates to ``inflated``."""
    dn = dist_name(name)
    path = os.path.join(directory, f"{dn}-{version}-py3-none-any.whl")
    member = f"{dn}-{version}.dist-info/METADATA"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr(f"{dn}/__init__.py", "")
        with zf.open(zipfile.ZipInfo(member), "w") as out:
            out.write(metadata_text(name, version).encode())
            zeros = bytes(1 << 20)
            for _ in range(inflated >> 20):
                out.write(zeros)
    _patch_sizes(path, member, declared)
    return path


def zip_with(
    directory: str,
    filename: str,
    members: dict[str, bytes],
    *,
    symlinks: Mapping[str, str] = MappingProxyType({}),
) -> str:
    """A zip of ``members`` plus unix symlinks (name -> target)."""
    path = os.path.join(directory, filename)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for arcname, data in members.items():
            zf.writestr(arcname, data)
        for arcname, target in symlinks.items():
            info = zipfile.ZipInfo(arcname)
            info.create_system = 3
            info.external_attr = 0o120777 << 16
            zf.writestr(info, target)
    return path


def wheel_with(
    directory: str,
    name: str,
    version: str,
    *,
    extra: Mapping[str, bytes] = MappingProxyType({}),
    symlinks: Mapping[str, str] = MappingProxyType({}),
) -> str:
    dn = dist_name(name)
    members = {
        f"{dn}/__init__.py": b"",
        f"{dn}-{version}.dist-info/METADATA": metadata_text(name, version).encode(),
        **extra,
    }
    return zip_with(directory, f"{dn}-{version}-py3-none-any.whl", members, symlinks=symlinks)


def sdist_with(
    directory: str,
    name: str,
    version: str,
    members: list[tarfile.TarInfo | tuple],
    *,
    pkg_info: bytes | None = None,
) -> str:
    """A tar.gz with PKG-INFO first, then ``members``: TarInfo (no data) or (TarInfo, fileobj)."""
    dn = dist_name(name)
    top = f"{dn}-{version}"
    path = os.path.join(directory, f"{top}.tar.gz")
    with tarfile.open(path, "w:gz", compresslevel=1) as tf:
        data = pkg_info if pkg_info is not None else metadata_text(name, version).encode()
        info = tarfile.TarInfo(f"{top}/PKG-INFO")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        for m in members:
            if isinstance(m, tuple):
                tf.addfile(*m)
            else:
                tf.addfile(m)
    return path


def link(name: str, target: str, *, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


def raw_tar_gz_lying_size(directory: str, name: str, version: str, declared: int) -> str:
    """PKG-INFO, then a member header claiming ``declared`` bytes that never follow."""
    dn = dist_name(name)
    top = f"{dn}-{version}"
    path = os.path.join(directory, f"{top}.tar.gz")
    buf = io.BytesIO()
    data = metadata_text(name, version).encode()
    info = tarfile.TarInfo(f"{top}/PKG-INFO")
    info.size = len(data)
    buf.write(info.tobuf())
    buf.write(data + bytes(-len(data) % 512))
    huge = tarfile.TarInfo(f"{top}/huge.bin")
    huge.size = declared
    buf.write(huge.tobuf(format=tarfile.GNU_FORMAT))
    with open(path, "wb") as f:
        f.write(gzip.compress(buf.getvalue()))
    return path
