"""Builds hostile archives cheaply for tests: bombs with lying headers, members outside the tree."""

from __future__ import annotations

import gzip
import io
import os
import struct
import tarfile
import zipfile
import zlib
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


def _zeros_deflated(size: int) -> bytes:
    """Raw deflate of ``size`` zero bytes, built from one compressed MiB repeated (instant even
    for 1 GiB: after a full flush the compressor restarts, so every MiB compresses the same)."""
    mib = bytes(1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    c.compress(mib)
    c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(mib) + c.flush(zlib.Z_FULL_FLUSH)
    return block * (size >> 20) + c.flush()


def bomb_wheel(directory: str, name: str, version: str, *, inflated: int, declared: int = 200) -> str:
    """A wheel whose METADATA header claims ``declared`` bytes but whose data inflates to ``inflated``
    (zeros after a real METADATA text)."""
    dn = dist_name(name)
    path = os.path.join(directory, f"{dn}-{version}-py3-none-any.whl")
    member = f"{dn}-{version}.dist-info/METADATA"
    head = metadata_text(name, version).encode()
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH) + _zeros_deflated(inflated)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{dn}/__init__.py", "")
    # Append the METADATA entry by hand: local header, data, then a new central directory.
    with zipfile.ZipFile(path) as zf:
        first = zf.infolist()[0]
        start_dir = zf.start_dir
    with open(path, "r+b") as f:
        f.seek(start_dir)
        central = f.read()
        central = central[: central.index(b"PK\x05\x06")]
        f.seek(start_dir)
        offset = f.tell()
        name_bytes = member.encode()
        crc = zlib.crc32(head)
        f.write(
            struct.pack(
                "<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(data), declared, len(name_bytes), 0
            )
        )
        f.write(name_bytes)
        f.write(data)
        new_dir = f.tell()
        f.write(central)
        f.write(
            struct.pack(
                "<4s6H3I5H2I",
                b"PK\x01\x02",
                20,
                20,
                0,
                8,
                0,
                0,
                crc,
                len(data),
                declared,
                len(name_bytes),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
        )
        f.write(name_bytes)
        end = f.tell()
        f.write(struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 2, 2, end - new_dir, new_dir, 0))
        f.truncate()
    assert first.filename.endswith("__init__.py")
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
