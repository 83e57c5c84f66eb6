"""The data set every server gets: 50 projects x 20 tiny wheels, and large wheels.

Cached under ``.work/dataset/``; a manifest records what was built, so a
second run reuses it. The large wheels (one per repetition, so that every
timed upload is of a file the server has not seen) are written by streaming
incompressible bytes into a ZIP_STORED member: memory stays flat.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sys
import zipfile
from dataclasses import dataclass, field

from benchmarks import ROOT, WORK

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.dists import dist_name, make_wheel, metadata_text  # noqa: E402

FOLDER = os.path.join(WORK, "dataset")
PROJECTS = 50
VERSIONS = 20
#: The project whose /simple/ page is measured (20 files).
BENCH_PROJECT = "bench-pkg-07"
#: A version of BENCH_PROJECT uploaded after the page was read, to see the page change.
FRESH_VERSION = "2.0.0"
MB = 1000 * 1000
GiB = 1024 * 1024 * 1024
#: name -> size of the incompressible file inside it.
LARGE = {"bench-big": 200 * MB, "bench-huge": GiB}
CHUNK = 1024 * 1024


@dataclass
class Dataset:
    small: list[str]
    #: "bench-big" / "bench-huge" -> one wheel per repetition.
    large: dict[str, list[str]]
    fresh: str
    folder: str = FOLDER
    meta: dict = field(default_factory=dict)

    def small_by_project(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for path in self.small:
            out.setdefault(os.path.basename(path).split("-")[0], []).append(path)
        return out


def project_name(i: int) -> str:
    return f"bench-pkg-{i:02d}"


def _write_large_wheel(directory: str, name: str, version: str, size: int) -> str:
    """A valid wheel with a ``size``-byte random member, written by streaming."""
    dn = dist_name(name)
    path = os.path.join(directory, f"{dn}-{version}-py3-none-any.whl")
    dist_info = f"{dn}-{version}.dist-info"
    small = {
        f"{dn}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{dist_info}/METADATA": metadata_text(name, version, summary="A large benchmark wheel").encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: cloudpypi-benchmarks\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    tmp = path + ".part"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for arcname, data in small.items():
            zf.writestr(arcname, data)
            record.append(_record_line(arcname, hashlib.sha256(data).digest(), len(data)))
        blob = f"{dn}/blob.bin"
        digest = hashlib.sha256()
        left = size
        with zf.open(blob, "w", force_zip64=True) as out:
            while left > 0:
                chunk = os.urandom(min(CHUNK, left))
                digest.update(chunk)
                out.write(chunk)
                left -= len(chunk)
        record.append(_record_line(blob, digest.digest(), size))
        record.append(f"{dist_info}/RECORD,,")
        zf.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    os.replace(tmp, path)
    return path


def _record_line(arcname: str, digest: bytes, size: int) -> str:
    b64 = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return f"{arcname},sha256={b64},{size}"


def build(*, repetitions: int, with_huge: bool, log=print) -> Dataset:
    """The data set, built (or reused from the cache) with ``repetitions`` large wheels of each size."""
    small_dir = os.path.join(FOLDER, "small")
    large_dir = os.path.join(FOLDER, "large")
    fresh_dir = os.path.join(FOLDER, "fresh")
    manifest_path = os.path.join(FOLDER, "manifest.json")
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        manifest = {}

    wanted_small = {"projects": PROJECTS, "versions": VERSIONS, "format": 1}
    if manifest.get("small") != wanted_small or not os.path.isdir(small_dir):
        log(f"dataset: writing {PROJECTS} x {VERSIONS} small wheels")
        shutil.rmtree(small_dir, ignore_errors=True)
        shutil.rmtree(fresh_dir, ignore_errors=True)
        os.makedirs(small_dir)
        os.makedirs(fresh_dir)
        for i in range(PROJECTS):
            for v in range(VERSIONS):
                make_wheel(small_dir, project_name(i), f"1.0.{v}")
        make_wheel(fresh_dir, BENCH_PROJECT, FRESH_VERSION)
        manifest = {"small": wanted_small, "large": {}}
        _save(manifest_path, manifest)
    small = sorted(os.path.join(small_dir, f) for f in os.listdir(small_dir) if f.endswith(".whl"))
    fresh = os.path.join(fresh_dir, f"{dist_name(BENCH_PROJECT)}-{FRESH_VERSION}-py3-none-any.whl")

    os.makedirs(large_dir, exist_ok=True)
    large: dict[str, list[str]] = {}
    for name, size in LARGE.items():
        if name == "bench-huge" and not with_huge:
            continue
        large[name] = []
        for r in range(repetitions):
            version = f"1.0.{r}"
            key = f"{name}-{version}"
            path = os.path.join(large_dir, f"{dist_name(name)}-{version}-py3-none-any.whl")
            if manifest["large"].get(key) != size or not os.path.exists(path):
                log(f"dataset: writing {os.path.basename(path)} ({size / MB:,.0f} MB of random bytes)")
                _write_large_wheel(large_dir, name, version, size)
                manifest["large"][key] = size
                _save(manifest_path, manifest)
            large[name].append(path)
    return Dataset(
        small,
        large,
        fresh,
        meta={
            "projects": PROJECTS,
            "versions": VERSIONS,
            "large_sizes": {k: os.path.getsize(v[0]) for k, v in large.items()},
        },
    )


def _save(path: str, manifest: dict) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(path + ".tmp", path)
