"""The targets the storage contract suite runs against.

Each target is a fixture that yields a fresh, empty backend. Real stores only:
local disk, S3 on moto's server, S3 on Swift's s3api, native Swift.
"""

from __future__ import annotations

import uuid

import pytest

from storage.local import LocalStorage
from storage.s3 import S3Storage
from storage.swift import SwiftStorage

TARGETS = ["local", "s3-moto", "swift", "s3-swift"]


@pytest.fixture
def local_store(tmp_path):
    yield LocalStorage(root=str(tmp_path / "store"))


#: Keys outside the store's prefix: a backend that ignored its prefix would see them.
S3_DECOYS = ["packages/aa/one.whl", "packages/ab/decoy.whl", "store-sibling/packages/aa/x.whl"]


@pytest.fixture
def s3_moto_store(moto_s3, moto_s3_bucket):
    """S3Storage with prefix "store/" on a fresh moto bucket that also holds decoy keys."""
    client = moto_s3.client()
    for key in S3_DECOYS:
        client.put_object(Bucket=moto_s3_bucket, Key=key, Body=b"decoy")
    store = S3Storage(client=client, bucket=moto_s3_bucket, prefix="store/")
    yield store
    store.close()


#: Objects outside the Swift stores' prefix "store/", in the same container.
SWIFT_DECOYS = ["packages/aa/one.whl", "packages/ab/decoy.whl", "store-sibling/packages/aa/x.whl"]


@pytest.fixture
def swift_container(swift_service):
    """A fresh container on the session's Swift, holding the decoys."""
    name = f"t-{uuid.uuid4().hex[:16]}"
    conn = swift_service.connection()
    conn.put_container(name)
    for path in SWIFT_DECOYS:
        conn.put_object(name, path, b"decoy")
    conn.close()
    return name


@pytest.fixture
def swift_store(swift_service, swift_container):
    """Native Swift, prefix "store/", 1 MiB segments: the 3 MB contract test is an SLO."""
    store = SwiftStorage(
        auth_url=swift_service.auth_url,
        user=swift_service.user,
        key=swift_service.key,
        container=swift_container,
        prefix="store/",
        segment_size=1024 * 1024,
        retries=1,
    )
    store.check()
    yield store
    store.close()


@pytest.fixture
def s3_swift_store(swift_service, swift_container, tmp_path):
    """S3Storage on Swift's s3api (path style, SigV4); 1 MB threshold so 3 MB is multipart."""
    store = S3Storage.from_config(
        {
            "bucket": swift_container,
            "prefix": "store/",
            "region": swift_service.s3_region,
            "endpoint_url": swift_service.s3_endpoint,
            "access_key_id": swift_service.s3_access_key,
            "secret_access_key": swift_service.s3_secret,
            "addressing_style": "path",
            "multipart_threshold": "1MB",
        },
        data_dir=str(tmp_path),
    )
    yield store
    store.close()


@pytest.fixture(params=TARGETS)
def store(request):
    """A fresh, empty backend of each kind in TARGETS."""
    return request.getfixturevalue(f"{request.param.replace('-', '_')}_store")
