"""``[storage]`` sections for the real stores the tests start, and the backends they build.

Three remote kinds, each a fresh bucket or container: ``s3-moto`` (moto's
server), ``s3-swift`` (Swift's s3api) and ``swift`` (native Swift); and
``local``, a folder. A pytest plugin (``tests/conftest.py`` loads it): the
``store_factory`` fixture is available to every test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import storage

REMOTE_KINDS = ["s3-moto", "s3-swift", "swift"]


def s3_moto_section(moto, bucket: str, **extra: str) -> dict[str, str]:
    return {
        "backend": "s3",
        "bucket": bucket,
        "endpoint_url": moto.endpoint_url,
        "region": "us-east-1",
        "access_key_id": moto.access_key_id,
        "secret_access_key": moto.secret_access_key,
        **extra,
    }


def s3_swift_section(swift, container: str, **extra: str) -> dict[str, str]:
    return {
        "backend": "s3",
        "bucket": container,
        "endpoint_url": swift.s3_endpoint,
        "region": swift.s3_region,
        "access_key_id": swift.s3_access_key,
        "secret_access_key": swift.s3_secret,
        "addressing_style": "path",
        **extra,
    }


def swift_section(swift, container: str, **extra: str) -> dict[str, str]:
    return {
        "backend": "swift",
        "auth_url": swift.auth_url,
        "auth_version": "1",
        "user": swift.user,
        "key": swift.key,
        "container": container,
        **extra,
    }


def new_swift_container(swift) -> str:
    """Create a uniquely named, empty container on ``swift``; return its name."""
    name = f"t-{uuid.uuid4().hex[:16]}"
    conn = swift.connection()
    try:
        conn.put_container(name)
    finally:
        conn.close()
    return name


def section_for(kind: str, request: pytest.FixtureRequest, tmp_path: Path, **extra: str) -> dict[str, str]:
    """A ``[storage]`` section for a fresh, empty store of ``kind``."""
    if kind == "local":
        return {"backend": "local", "path": str(tmp_path / f"store-{uuid.uuid4().hex[:8]}"), **extra}
    if kind == "s3-moto":
        return s3_moto_section(
            request.getfixturevalue("moto_s3"), request.getfixturevalue("moto_s3_bucket"), **extra
        )
    swift = request.getfixturevalue("swift_service")
    container = new_swift_container(swift)
    if kind == "s3-swift":
        return s3_swift_section(swift, container, **extra)
    if kind == "swift":
        return swift_section(swift, container, **extra)
    raise ValueError(kind)


def build(section: dict[str, str], data_dir: str | Path) -> storage.Storage:
    """The backend a section names, checked (the Swift container exists afterwards)."""
    store = storage.from_config(section, data_dir=str(data_dir))
    store.check()
    return store


@pytest.fixture
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator:
    """``make(kind, **extra) -> (section, store)``: fresh stores, closed afterwards."""
    made: list[storage.Storage] = []

    def make(kind: str, **extra: str) -> tuple[dict[str, str], storage.Storage]:
        section = section_for(kind, request, tmp_path, **extra)
        store = build(section, tmp_path)
        made.append(store)
        return section, store

    yield make
    for store in made:
        store.close()


class FailingDeletes(storage.Storage):
    """A real backend whose ``delete`` raises StorageUnavailable while ``failing`` is set."""

    name = "failing-deletes"

    def __init__(self, inner: storage.Storage) -> None:
        self.inner = inner
        self.failing = True
        self.attempts: list[str] = []

    @classmethod
    def from_config(cls, settings, *, data_dir):  # pragma: no cover - built directly
        raise NotImplementedError

    def put(self, path, local_file, *, content_type="application/octet-stream", metadata=None):
        return self.inner.put(path, local_file, content_type=content_type, metadata=metadata)

    def open(self, path):
        return self.inner.open(path)

    def stat(self, path):
        return self.inner.stat(path)

    def delete(self, path):
        self.attempts.append(path)
        if self.failing:
            raise storage.StorageUnavailable(f"cannot delete {path}: the store is down (test)")
        return self.inner.delete(path)

    def list(self, prefix=""):
        return self.inner.list(prefix)
