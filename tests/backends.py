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


class Wrapped(storage.Storage):
    """A real backend behind the Storage contract, for tests that break one of its methods."""

    name = "wrapped"

    def __init__(self, inner: storage.Storage) -> None:
        self.inner = inner

    @classmethod
    def from_config(cls, settings, *, data_dir):  # pragma: no cover - built directly
        raise NotImplementedError

    def _put(self, path, local_file, headers):
        return self.inner._put(path, local_file, headers)

    def _put_file(self, path, local_path, headers):
        return self.inner._put_file(path, local_path, headers)

    def _open(self, path, start, stop):
        return self.inner._open(path, start, stop)

    def _stat(self, path):
        return self.inner._stat(path)

    def _metadata(self, path):
        return self.inner._metadata(path)

    def _delete(self, path):
        return self.inner._delete(path)

    def _list(self, prefix):
        return self.inner._list(prefix)

    def _public_url(self, path):
        return self.inner._public_url(path)

    def __getattr__(self, name):  # root, bucket, ... of the real backend
        return getattr(self.inner, name)


class BrokenStore(Wrapped):
    """Every write (``put`` and ``put_file``) fails while ``broken`` is set: the store went away."""

    def __init__(self, inner: storage.Storage) -> None:
        super().__init__(inner)
        self.broken = True
        self.refused: list[str] = []

    def _refuse(self, path: str) -> None:
        if self.broken:
            self.refused.append(path)
            raise storage.StorageUnavailable(f"cannot write {path}: connection refused (test)")

    def _put(self, path, local_file, headers):
        self._refuse(path)
        return super()._put(path, local_file, headers)

    def _put_file(self, path, local_path, headers):
        self._refuse(path)
        return super()._put_file(path, local_path, headers)


class FailingDeletes(Wrapped):
    """A real backend whose ``delete`` raises StorageUnavailable while ``failing`` is set."""

    name = "failing-deletes"

    def __init__(self, inner: storage.Storage) -> None:
        super().__init__(inner)
        self.failing = True
        self.attempts: list[str] = []

    def _delete(self, path):
        self.attempts.append(path)
        if self.failing:
            raise storage.StorageUnavailable(f"cannot delete {path}: the store is down (test)")
        return self.inner._delete(path)
