"""S3-only tests: settings and error mapping, against moto's server over HTTP.

Behaviour every backend shares is in test_contract.py; this file covers what
only S3 has: from_config, the headers and ACL/encryption on stored objects,
multipart uploads, the key prefix, and how S3's failures are reported.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import storage
from storage.base import (
    InvalidPath,
    NotFound,
    StorageError,
    StorageMisconfigured,
    StorageUnavailable,
)
from storage.s3 import MiB, S3Storage
from tests.services.moto_s3 import free_port, new_bucket_name

PATH = "packages/ab/cd/abcdef/demo-1.0.tar.gz"
#: A Cache-Control the caller's policy decided (the store invents none).
CACHE = "max-age=31536000, immutable, public"


def settings_for(server, bucket, **extra):
    """Settings as config.ini would give them, for a bucket on a moto server."""
    values = {
        "bucket": bucket,
        "endpoint_url": server.endpoint_url,
        "region": "us-east-1",
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
    }
    values.update(extra)
    return {k: v for k, v in values.items() if v is not None}


def misconfigured(settings, tmp_path) -> StorageMisconfigured:
    with pytest.raises(StorageMisconfigured) as info:
        S3Storage.from_config(settings, data_dir=str(tmp_path))
    return info.value


# -- from_config ------------------------------------------------------------------------


def test_missing_bucket_names_the_key(tmp_path):
    exc = misconfigured({"endpoint_url": "http://127.0.0.1:9"}, tmp_path)
    assert exc.key == "bucket"
    assert str(exc) == "[storage] bucket is required for backend = s3"


@pytest.mark.parametrize(
    "key, value",
    [
        ("multipart_threshold", "lots"),
        ("multipart_threshold", "0"),
        ("multipart_chunksize", "1MB"),  # below S3's 5 MiB part minimum
        ("max_concurrency", "0"),
        ("max_attempts", "three"),
        ("retry_mode", "sometimes"),
        ("addressing_style", "sideways"),
        ("acl", "world-writable"),
        ("server_side_encryption", "rot13"),
        ("connect_timeout", "soon"),
        ("read_timeout", "-1"),
        ("endpoint_url", "localhost:9000"),
        ("public_url", "ftp://files.example.org/"),
        ("bucket", "a/b"),
        ("prefix", "a/../b"),
        ("payload_signing", "sometimes"),
    ],
)
def test_invalid_setting_names_its_key(tmp_path, key, value):
    settings = {"bucket": "my-bucket", "access_key_id": "AK", "secret_access_key": "SK"}
    settings[key] = value
    exc = misconfigured(settings, tmp_path)
    assert exc.key == key
    assert key in str(exc)
    assert "SK" not in str(exc)


def test_credentials_must_come_in_pairs(tmp_path):
    assert misconfigured({"bucket": "b12", "access_key_id": "AK"}, tmp_path).key == ("secret_access_key")
    assert misconfigured({"bucket": "b12", "secret_access_key": "SK"}, tmp_path).key == ("access_key_id")
    (tmp_path / "secret").write_text("SK\n")
    both = {"bucket": "b12", "access_key_id": "AK", "secret_access_key": "SK"}
    both["secret_access_key_file"] = "secret"
    assert misconfigured(both, tmp_path).key == "secret_access_key_file"
    missing = {"bucket": "b12", "access_key_id": "AK", "secret_access_key_file": "nope"}
    assert misconfigured(missing, tmp_path).key == "secret_access_key_file"


def test_from_config_reads_every_setting(tmp_path):
    store = S3Storage.from_config(
        {
            "bucket": "my-bucket",
            "prefix": "/pypi/files/",
            "region": "eu-west-1",
            "endpoint_url": "http://127.0.0.1:9",
            "access_key_id": "AK",
            "secret_access_key": "SK",
            "addressing_style": "path",
            "multipart_threshold": "16MB",
            "multipart_chunksize": "6291456",
            "max_concurrency": "4",
            "acl": "public-read",
            "server_side_encryption": "aws:kms",
            "public_url": "https://files.example.org",
            "max_attempts": "7",
            "retry_mode": "adaptive",
            "connect_timeout": "2.5",
            "read_timeout": "30",
        },
        data_dir=str(tmp_path),
    )
    assert store.bucket == "my-bucket"
    assert store.prefix == "pypi/files/"
    assert store.extra_args == {
        "ACL": "public-read",
        "ServerSideEncryption": "aws:kms",
    }
    assert store.transfer_config.multipart_threshold == 16 * MiB
    assert store.transfer_config.multipart_chunksize == 6 * MiB
    assert store.transfer_config.max_request_concurrency == 4
    config = store.client.meta.config
    assert store.client.meta.region_name == "eu-west-1"
    assert store.endpoint_url == "http://127.0.0.1:9"
    assert config.s3["addressing_style"] == "path"
    assert config.retries == {"mode": "adaptive", "total_max_attempts": 7}
    assert (config.connect_timeout, config.read_timeout) == (2.5, 30.0)
    assert store.public_url("a/b.whl") == "https://files.example.org/pypi/files/a/b.whl"


def test_the_factory_builds_s3(moto_s3, moto_s3_bucket, tmp_path):
    settings = settings_for(moto_s3, moto_s3_bucket, backend="s3")
    store = storage.from_config(settings, data_dir=str(tmp_path))
    assert isinstance(store, S3Storage)
    store.check()
    store.put(PATH, io.BytesIO(b"hello"))
    assert store.stat(PATH).size == 5


# -- check() and error mapping ----------------------------------------------------------


def test_check_passes_on_a_good_bucket(moto_s3, moto_s3_bucket, tmp_path):
    S3Storage.from_config(settings_for(moto_s3, moto_s3_bucket), data_dir=str(tmp_path)).check()


def test_check_names_bucket_when_it_does_not_exist(moto_s3, tmp_path):
    store = S3Storage.from_config(settings_for(moto_s3, new_bucket_name()), data_dir=str(tmp_path))
    with pytest.raises(StorageMisconfigured) as info:
        store.check()
    assert info.value.key == "bucket"
    assert "does not exist" in str(info.value)


def test_operations_on_a_missing_bucket_name_the_bucket(moto_s3, tmp_path):
    store = S3Storage.from_config(settings_for(moto_s3, new_bucket_name()), data_dir=str(tmp_path))
    for action in (
        lambda: store.put(PATH, io.BytesIO(b"x")),
        lambda: store.open(PATH),
        lambda: list(store.list()),
    ):
        with pytest.raises(StorageMisconfigured) as info:
            action()
        assert info.value.key == "bucket"


@pytest.fixture
def auth_bucket(moto_s3_auth):
    """A bucket on the moto server that checks credentials."""
    client = moto_s3_auth.client()
    bucket = new_bucket_name()
    client.create_bucket(Bucket=bucket)
    yield bucket
    client.delete_bucket(Bucket=bucket)
    client.close()


def test_secret_from_a_file_signs_requests(moto_s3_auth, auth_bucket, tmp_path):
    (tmp_path / "s3-secret").write_text(moto_s3_auth.secret_access_key + "\n")
    settings = settings_for(
        moto_s3_auth, auth_bucket, secret_access_key=None, secret_access_key_file="s3-secret"
    )
    store = S3Storage.from_config(settings, data_dir=str(tmp_path))
    store.check()
    store.put(PATH, io.BytesIO(b"signed"))
    assert store.stat(PATH).size == 6
    store.delete(PATH)


@pytest.mark.parametrize("signing, expect_unsigned", [("auto", False), ("false", True)])
def test_payload_signing_false_sends_parts_unsigned(
    moto_s3_auth, auth_bucket, tmp_path, signing, expect_unsigned
):
    """``payload_signing = false``: a streamed upload's parts go as UNSIGNED-PAYLOAD even over plain
    http (botocore's own rule hashes every body into the signature there); the store with
    signature checks on accepts them, and the object is whole."""
    settings = settings_for(moto_s3_auth, auth_bucket, payload_signing=signing)
    store = S3Storage.from_config(settings, data_dir=str(tmp_path))
    sent = []
    store.client.meta.events.register(
        "before-send.s3.UploadPart",
        lambda request, **kw: sent.append(request.headers["X-Amz-Content-SHA256"]),
    )
    data = os.urandom(11 * MiB)
    upload = store.begin_upload(PATH)
    for i in range(0, len(data), MiB):
        upload.write(data[i : i + MiB])
    upload.complete(PATH)
    try:
        assert len(sent) == 2
        assert all((v in (b"UNSIGNED-PAYLOAD", "UNSIGNED-PAYLOAD")) == expect_unsigned for v in sent)
        with store.open(PATH) as f:
            assert f.read() == data
    finally:
        store.delete(PATH)


@pytest.mark.parametrize(
    "access_key_id, secret, code",
    [
        ("AKIAIOSFODNN7UNKNOWN", "whatever-secret-1234", "InvalidAccessKeyId"),
        (None, "a-wrong-secret-5678", "SignatureDoesNotMatch"),
    ],
)
def test_bad_credentials_name_access_key_id(moto_s3_auth, auth_bucket, tmp_path, access_key_id, secret, code):
    settings = settings_for(moto_s3_auth, auth_bucket, secret_access_key=secret, max_attempts="1")
    if access_key_id:
        settings["access_key_id"] = access_key_id
    store = S3Storage.from_config(settings, data_dir=str(tmp_path))
    for action in (store.check, lambda: store.put(PATH, io.BytesIO(b"x"))):
        with pytest.raises(StorageMisconfigured) as info:
            action()
        assert info.value.key == "access_key_id"
        assert code in str(info.value)
        assert secret not in str(info.value)


def test_no_credentials_anywhere_names_access_key_id(moto_s3, tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    settings = {
        "bucket": "some-bucket",
        "endpoint_url": moto_s3.endpoint_url,
        "region": "us-east-1",
    }
    store = S3Storage.from_config(settings, data_dir=str(tmp_path))
    with pytest.raises(StorageMisconfigured) as info:
        store.check()
    assert info.value.key == "access_key_id"


def test_unreachable_endpoint_is_unavailable_quickly(tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = {
        "bucket": "some-bucket",
        "endpoint_url": endpoint,
        "access_key_id": "AK",
        "secret_access_key": "SK",
        "region": "us-east-1",
        "max_attempts": "1",
        "connect_timeout": "1",
        "read_timeout": "1",
    }
    store = S3Storage.from_config(settings, data_dir=str(tmp_path))
    started = time.monotonic()
    for action in (
        store.check,
        lambda: store.put(PATH, io.BytesIO(b"x")),
        lambda: store.open(PATH),
        lambda: store.exists(PATH),
        lambda: list(store.list()),
    ):
        with pytest.raises(StorageUnavailable) as info:
            action()
        assert "endpoint_url" in str(info.value) and endpoint in str(info.value)
    assert time.monotonic() - started < 10


class _Failing(BaseHTTPRequestHandler):
    """Answers every request with the status and S3 error code of its server."""

    def _answer(self):
        self.server.requests += 1
        body = b""
        if self.command != "HEAD":
            body = (
                f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{self.server.code}</Code>"
                f"<Message>try later</Message></Error>"
            ).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.fixture(params=[(503, "SlowDown"), (500, "InternalError")])
def failing_endpoint(request):
    """An HTTP server on 127.0.0.1 that answers like an S3 in trouble."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    server.status, server.code = request.param
    server.requests = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_server_errors_after_retries_are_unavailable(failing_endpoint, tmp_path):
    settings = {
        "bucket": "some-bucket",
        "endpoint_url": f"http://127.0.0.1:{failing_endpoint.server_port}",
        "access_key_id": "AK",
        "secret_access_key": "SK",
        "region": "us-east-1",
        "addressing_style": "path",
        "max_attempts": "2",
    }
    store = S3Storage.from_config(settings, data_dir=str(tmp_path))
    with pytest.raises(StorageUnavailable) as info:
        store.open(PATH)
    assert failing_endpoint.code in str(info.value)
    assert failing_endpoint.requests == 2  # the first try and one retry
    with pytest.raises(StorageUnavailable):
        store.put(PATH, io.BytesIO(b"x"))


def test_no_library_exception_leaves_the_backend(moto_s3, moto_s3_bucket):
    store = S3Storage(client=moto_s3.client(), bucket=moto_s3_bucket)
    with pytest.raises(NotFound):
        store.open("no/such/object")
    with pytest.raises(InvalidPath):
        store.stat("../escape")
    with pytest.raises(StorageError):
        store.put(PATH, io.BytesIO(b"x"), metadata={"name": "não-ascii"})


# -- what is stored ---------------------------------------------------------------------


def test_objects_carry_cache_control_type_and_metadata(moto_s3, moto_s3_bucket):
    client = moto_s3.client()
    store = S3Storage(client=client, bucket=moto_s3_bucket, prefix="files")
    store.put(
        PATH,
        io.BytesIO(b"sdist"),
        content_type="application/x-tar",
        metadata={"sha256": "abc123", "uploaded-by": "alice"},
        cache_control=CACHE,
    )
    head = client.head_object(Bucket=moto_s3_bucket, Key="files/" + PATH)
    assert head["CacheControl"] == CACHE
    assert head["ContentType"] == "application/x-tar"
    assert head["Metadata"] == {"sha256": "abc123", "uploaded-by": "alice"}
    assert store.metadata(PATH) == {"sha256": "abc123", "uploaded-by": "alice"}
    info = store.stat(PATH)
    assert info.etag == hashlib.md5(b"sdist").hexdigest()
    assert info.content_type == "application/x-tar"


def test_no_cache_control_unless_the_caller_gives_one(moto_s3, moto_s3_bucket):
    client = moto_s3.client()
    store = S3Storage(client=client, bucket=moto_s3_bucket)
    store.put(PATH, io.BytesIO(b"x"))
    assert "CacheControl" not in client.head_object(Bucket=moto_s3_bucket, Key=PATH)


def test_a_range_is_one_ranged_get(moto_s3, moto_s3_bucket):
    client = moto_s3.client()
    calls = []
    client.meta.events.register(
        "before-call.s3", lambda model, params, **kw: calls.append((model.name, params))
    )
    store = S3Storage(client=client, bucket=moto_s3_bucket)
    store.put(PATH, io.BytesIO(b"0123456789"))
    calls.clear()
    with store.open(PATH, start=2, stop=5) as f:
        assert f.read() == b"234" and f.range == (2, 5) and f.info.size == 10
    assert [name for name, _ in calls] == ["GetObject"]
    assert calls[0][1]["headers"]["Range"] == "bytes=2-4"


def test_acl_and_server_side_encryption_are_applied(moto_s3, moto_s3_bucket):
    client = moto_s3.client()
    store = S3Storage(
        client=client, bucket=moto_s3_bucket, acl="public-read", server_side_encryption="AES256"
    )
    store.put(PATH, io.BytesIO(b"public"))
    head = client.head_object(Bucket=moto_s3_bucket, Key=PATH)
    assert head["ServerSideEncryption"] == "AES256"
    grants = client.get_object_acl(Bucket=moto_s3_bucket, Key=PATH)["Grants"]
    assert any(
        g["Grantee"].get("URI", "").endswith("/global/AllUsers") and g["Permission"] == "READ" for g in grants
    )


def _file_of(tmp_path, size):
    path = tmp_path / "upload.bin"
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, MiB))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return path, digest.hexdigest()


def test_multipart_upload_round_trips(moto_s3, moto_s3_bucket, tmp_path):
    client = moto_s3.client()
    store = S3Storage(
        client=client,
        bucket=moto_s3_bucket,
        multipart_threshold=5 * MiB,
        multipart_chunksize=5 * MiB,
        max_concurrency=3,
    )
    path, sha256 = _file_of(tmp_path, 11 * MiB + 7)
    with open(path, "rb") as f:
        store.put(PATH, f, content_type="application/zip", metadata={"sha256": sha256}, cache_control=CACHE)
    info = store.stat(PATH)
    assert info.size == 11 * MiB + 7
    assert info.etag.endswith("-3")  # three parts: 5 + 5 + 1 MiB
    head = client.head_object(Bucket=moto_s3_bucket, Key=PATH)
    assert head["CacheControl"] == CACHE
    assert head["Metadata"] == {"sha256": sha256}
    digest = hashlib.sha256()
    with store.open(PATH) as f:
        for block in iter(lambda: f.read(MiB), b""):
            digest.update(block)
    assert digest.hexdigest() == sha256


def test_failed_multipart_upload_is_aborted(moto_s3, moto_s3_bucket):
    class FailsLate(io.RawIOBase):
        def __init__(self):
            self.sent = 0

        def readable(self):
            return True

        def readinto(self, b):
            if self.sent >= 12 * MiB:
                raise OSError("client went away")
            b[:] = b"z" * len(b)
            self.sent += len(b)
            return len(b)

    client = moto_s3.client()
    store = S3Storage(
        client=client,
        bucket=moto_s3_bucket,
        multipart_threshold=5 * MiB,
        multipart_chunksize=5 * MiB,
    )
    with pytest.raises(StorageUnavailable):
        store.put(PATH, io.BufferedReader(FailsLate()))
    assert not store.exists(PATH)
    assert client.list_multipart_uploads(Bucket=moto_s3_bucket).get("Uploads", []) == []


def test_prefix_is_prepended_in_the_bucket_and_stripped_in_list(moto_s3, moto_s3_bucket):
    client = moto_s3.client()
    store = S3Storage(client=client, bucket=moto_s3_bucket, prefix="/pypi/files/")
    assert store.prefix == "pypi/files/"
    for key in ("outside.whl", "pypi/files-sibling/a/x.whl", "pypi/files/a/"):  # last: a folder
        client.put_object(Bucket=moto_s3_bucket, Key=key, Body=b"")
    store.put("a/one.whl", io.BytesIO(b"1"))
    store.put("b/two.whl", io.BytesIO(b"22"))
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=moto_s3_bucket)["Contents"]}
    assert {"pypi/files/a/one.whl", "pypi/files/b/two.whl"} <= keys
    assert {(i.path, i.size) for i in store.list()} == {("a/one.whl", 1), ("b/two.whl", 2)}
    assert [i.path for i in store.list("a/")] == ["a/one.whl"]
    assert all(i.etag and i.last_modified for i in store.list())


def test_list_pages_through_many_objects(moto_s3, moto_s3_bucket):
    client = moto_s3.client()
    store = S3Storage(client=client, bucket=moto_s3_bucket, prefix="p")
    with ThreadPoolExecutor(8) as pool:  # list_objects_v2 answers at most 1000 keys a page
        for i in range(1005):
            pool.submit(client.put_object, Bucket=moto_s3_bucket, Key=f"p/k/{i:04d}", Body=b"")
    assert len({i.path for i in store.list("k/")}) == 1005


def test_public_url(moto_s3, moto_s3_bucket):
    client = moto_s3.client()
    plain = S3Storage(client=client, bucket=moto_s3_bucket)
    assert plain.public_url(PATH) is None
    cdn = S3Storage(client=client, bucket=moto_s3_bucket, prefix="p", public_url="https://cdn.example.org/")
    assert cdn.public_url("a/demo-1.0+local.whl") == "https://cdn.example.org/p/a/demo-1.0%2Blocal.whl"
    with pytest.raises(InvalidPath):
        cdn.public_url("../x")


# -- memory -----------------------------------------------------------------------------


def test_put_and_open_keep_memory_flat(moto_s3, moto_s3_bucket, tmp_path):
    """Python allocations (tracemalloc, all threads) stay near the chunk size, not the file's.

    moto runs in another process, so only the client's memory is counted. A
    multipart put holds up to (max_concurrency + 1) parts of 5 MiB.
    """
    size = 32 * MiB
    path, _ = _file_of(tmp_path, size)
    store = S3Storage(
        client=moto_s3.client(),
        bucket=moto_s3_bucket,
        multipart_threshold=5 * MiB,
        multipart_chunksize=5 * MiB,
        max_concurrency=1,
    )
    store.put("warm-up", io.BytesIO(b"x"))  # first-use imports and connection set-up
    tracemalloc.start()
    try:
        with open(path, "rb") as f:
            store.put(PATH, f)
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        read = 0
        with store.open(PATH) as f:
            for block in iter(lambda: f.read(MiB), b""):
                read += len(block)
        _, open_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert read == size
    assert put_peak < 2 * 5 * MiB + 4 * MiB, put_peak
    assert open_peak < 6 * MiB, open_peak


def test_a_streamed_upload_holds_only_the_parts_in_flight(moto_s3, moto_s3_bucket):
    """begin_upload's memory: the part being filled and at most ``stream_parts_in_flight`` being
    sent (tracemalloc, all threads), whatever the object's size."""
    store = S3Storage(
        client=moto_s3.client(),
        bucket=moto_s3_bucket,
        multipart_chunksize=5 * MiB,
        stream_parts_in_flight=2,
    )
    store.put("warm-up", io.BytesIO(b"x"))
    chunk = os.urandom(MiB)
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        upload = store.begin_upload(PATH)
        for _ in range(48):
            upload.write(chunk)
            digest.update(chunk)
        upload.complete(PATH)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    with store.open(PATH) as f:
        assert hashlib.sha256(f.read()).hexdigest() == digest.hexdigest()
    assert peak < (2 + 2) * 5 * MiB + 4 * MiB, peak
    head = store.client.head_object(Bucket=moto_s3_bucket, Key=PATH)
    assert head["ETag"].strip('"').endswith("-10")  # 48 MiB in parts of 5 MiB: 9 whole and 1 last
