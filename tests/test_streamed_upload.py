"""Uploads stream to the store while the body arrives (``Storage.begin_upload``), on S3 (moto's
server) and native Swift: completed at the content-addressed path only once every check
passed; a refused or failed upload leaves no object and no incomplete multipart upload."""

from __future__ import annotations

import hashlib
import io
import os
import uuid

import pytest
import webtest
from botocore.exceptions import ClientError

import storage
from pypi.app import make_app
from pypi.index.objects import content_path
from pypi.operations import leftovers
from pypi.upload.spool import FormError, read_form
from tests.backends import s3_moto_section, swift_section
from tests.conftest import PASSWORD, basic, make_config
from tests.dists import digests, make_wheel
from tests.uploading import upload

MiB = 1024 * 1024


@pytest.fixture
def s3_app(tmp_path, db, users, moto_s3, moto_s3_bucket):
    """The app on S3 with 5 MiB parts, so the 12 MB wheel streams in three parts."""
    section = s3_moto_section(moto_s3, moto_s3_bucket, prefix="idx", multipart_chunksize="5MB")
    app = make_app(make_config(tmp_path, db.url, storage=section), db=db)
    yield app
    app.services.storage.close()


@pytest.fixture
def big_wheel(tmp_path):
    return make_wheel(str(tmp_path), "streamed", "1.0", extra_bytes=12 * MiB)


def bucket_state(store):
    """(every key in the bucket below the prefix, the incomplete multipart uploads)."""
    client = store.client
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=store.bucket).get("Contents", [])]
    uploads = client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    return sorted(k for k in keys if k.startswith(store.prefix)), uploads


def no_put_file(store, monkeypatch):
    """Make sending the spooled file at the end impossible: only a streamed upload can store."""

    def refused(*args, **kwargs):
        raise AssertionError("the file was sent after the body, not streamed")

    monkeypatch.setattr(store, "_put_file", refused)


def test_a_twine_ordered_upload_streams_to_its_path(s3_app, big_wheel, monkeypatch):
    store = s3_app.services.storage
    no_put_file(store, monkeypatch)
    testapp = webtest.TestApp(s3_app)
    upload(testapp, big_wheel, name="streamed", version="1.0")

    path = content_path(digests(big_wheel)["blake2_256_digest"], os.path.basename(big_wheel))
    keys, uploads = bucket_state(store)
    assert keys == [f"idx/{path}", f"idx/{path}.metadata"]
    assert uploads == []
    with open(big_wheel, "rb") as f:
        assert testapp.get("/" + path).body == f.read()
    head = store.client.head_object(Bucket=store.bucket, Key=f"idx/{path}")
    assert head["ETag"].strip('"').endswith("-3")  # three 5 MiB parts, sent as they came
    assert head["ContentType"] == "application/zip"
    assert head["Metadata"]["sha256"] == digests(big_wheel)["sha256_digest"]
    assert head["CacheControl"] == "max-age=365000000, immutable, public"


@pytest.mark.parametrize(
    "change",
    [
        {"sha256_digest": "0" * 64},  # blake2b right, sha256 wrong: streamed to the path, refused
        {"blake2_256_digest": hashlib.blake2b(b"another file", digest_size=32).hexdigest()},
    ],
    ids=["sha256", "blake2b"],
)
def test_a_digest_mismatch_leaves_nothing_in_the_bucket(s3_app, big_wheel, change):
    testapp = webtest.TestApp(s3_app)
    r = upload(testapp, big_wheel, name="streamed", version="1.0", status=400, **change)
    assert "digest supplied does not match" in r.text
    assert bucket_state(s3_app.services.storage) == ([], [])


def test_a_bad_archive_leaves_nothing_in_the_bucket(s3_app, tmp_path):
    bogus = tmp_path / "streamed-1.0-py3-none-any.whl"
    bogus.write_bytes(os.urandom(11 * MiB))  # not a zip; its digests are right
    testapp = webtest.TestApp(s3_app)
    upload(testapp, str(bogus), name="streamed", version="1.0", status=400)
    assert bucket_state(s3_app.services.storage) == ([], [])


def test_a_file_already_there_leaves_no_second_upload(s3_app, big_wheel):
    testapp = webtest.TestApp(s3_app)
    upload(testapp, big_wheel, name="streamed", version="1.0")
    before = bucket_state(s3_app.services.storage)
    r = upload(testapp, big_wheel, name="streamed", version="1.0")
    assert "already uploaded" in r.text
    assert bucket_state(s3_app.services.storage) == before


def distutils_body(path: str, name: str, version: str) -> tuple[bytes, str]:
    """A form as distutils ``setup.py upload`` orders it: the file before the digests."""
    boundary = uuid.uuid4().hex
    with open(path, "rb") as f:
        content = f.read()
    fields = [
        (":action", "file_upload"),
        ("protocol_version", "1"),
        ("metadata_version", "2.1"),
        ("name", name),
        ("version", version),
    ]
    after = [("filetype", "bdist_wheel"), ("pyversion", "py3"), *digests(path).items()]
    out = io.BytesIO()
    for key, value in fields:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
    out.write(
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; '
        f'filename="{os.path.basename(path)}"\r\n\r\n'.encode()
        + content
        + b"\r\n"
    )
    for key, value in after:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def test_digests_after_the_file_stream_to_a_temporary_and_are_copied(s3_app, big_wheel, monkeypatch):
    store = s3_app.services.storage
    no_put_file(store, monkeypatch)
    body, content_type = distutils_body(big_wheel, "streamed", "1.0")
    testapp = webtest.TestApp(s3_app)
    testapp.post("/legacy/", body, headers={**basic("alice", PASSWORD), "Content-Type": content_type})

    path = content_path(digests(big_wheel)["blake2_256_digest"], os.path.basename(big_wheel))
    assert bucket_state(store) == ([f"idx/{path}", f"idx/{path}.metadata"], [])
    with open(big_wheel, "rb") as f:
        assert testapp.get("/" + path).body == f.read()
    assert store.metadata(path)["sha256"] == digests(big_wheel)["sha256_digest"]
    assert list(store.stale_temporaries(0)) == []


def test_a_store_failure_mid_stream_is_503_and_no_row(s3_app, big_wheel, monkeypatch):
    store = s3_app.services.storage
    real = store.client.upload_part
    calls = []

    def second_part_fails(**kwargs):
        calls.append(kwargs["PartNumber"])
        if kwargs["PartNumber"] == 2:
            raise ClientError({"Error": {"Code": "ServiceUnavailable"}, "ResponseMetadata": {}}, "UploadPart")
        return real(**kwargs)

    monkeypatch.setattr(store.client, "upload_part", second_part_fails)
    testapp = webtest.TestApp(s3_app)
    r = upload(testapp, big_wheel, name="streamed", version="1.0", status=503)
    assert "Storage unavailable" in r.text
    assert 2 in calls
    assert bucket_state(store) == ([], [])
    assert testapp.get("/simple/streamed/", status=404)


def test_a_client_that_goes_away_leaves_no_multipart_upload(s3_app, big_wheel, tmp_path):
    body, content_type = distutils_body(big_wheel, "streamed", "1.0")
    stream = io.BytesIO(body[: 11 * MiB])  # the connection breaks after 11 MiB: two parts sent

    def read(size):
        data = stream.read(size)
        if not data:
            raise OSError("client disconnected")
        return data

    uploader = s3_app.services.uploader
    with pytest.raises(OSError):
        read_form(
            read,
            content_type=content_type,
            content_length=len(body),
            max_file_size=1 << 30,
            tmp_dir=str(tmp_path / "spool"),
            open_sink=lambda form, name, spool: uploader.begin_stream(form, name, spool, len(body)),
        )
    assert bucket_state(s3_app.services.storage) == ([], [])
    assert os.listdir(tmp_path / "spool") == []


def test_a_killed_streamed_upload_leaves_what_leftovers_cleans(s3_app):
    store = s3_app.services.storage
    known = store.begin_upload("packages/aa/bb/cc/killed-1.0.tar.gz")
    known.write(os.urandom(6 * MiB))  # one part sent; the process dies before complete or abort
    unknown = store.begin_upload(None)
    unknown.write(os.urandom(6 * MiB))
    unknown._drain()
    # ... and one killed between completing its temporary and copying it to the final key:
    store.client.put_object(Bucket=store.bucket, Key="idx/.tmp-uploads/crashed", Body=b"x")
    known._drain()

    found = list(leftovers.find(store, None, 0))
    names = sorted(f.name for f in found)
    assert len(found) == 3, names
    assert any(".tmp-uploads/crashed (unfinished upload)" in n for n in names)
    assert sum("multipart upload" in n for n in names) == 2
    assert [i.path for i in store.list("")] == []  # temporaries are not objects of the store

    removed, failed = leftovers.clean(store, None, 0)
    assert (len(removed), failed) == (3, [])
    assert bucket_state(store) == ([], [])


def test_the_spool_feeds_the_sink_the_files_bytes_and_aborts_it_on_a_bad_body(tmp_path):
    """A sink sees exactly the file's bytes, while they arrive, and is aborted on a bad body."""
    seen, aborted = [], []

    class Sink:
        def write(self, data):
            seen.append(bytes(data))

        def abort(self):
            aborted.append(True)

    data = os.urandom(3 * MiB)
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="x.whl"\r\n\r\n'.encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    form = read_form(
        io.BytesIO(body).read,
        content_type=f"multipart/form-data; boundary={boundary}",
        content_length=len(body),
        max_file_size=1 << 30,
        tmp_dir=str(tmp_path),
        open_sink=lambda fields, name, spool: Sink(),
    )
    assert b"".join(seen) == data and len(seen) > 1
    assert form.stream is not None and not aborted
    form.close()
    assert aborted == [True]

    seen.clear()
    with pytest.raises(FormError):
        read_form(
            io.BytesIO(body[: len(body) // 2]).read,
            content_type=f"multipart/form-data; boundary={boundary}",
            content_length=len(body),
            max_file_size=1 << 30,
            tmp_dir=str(tmp_path),
            open_sink=lambda fields, name, spool: Sink(),
        )
    assert aborted == [True, True]


# -- native Swift --------------------------------------------------------------------------


@pytest.fixture
def swift_app(tmp_path, db, users, swift_service):
    """The app on Swift with 4 MiB segments: the 12 MB wheel streams as a Static Large Object."""
    container = f"t-{uuid.uuid4().hex[:16]}"
    section = swift_section(swift_service, container, segment_size="4MB")
    app = make_app(make_config(tmp_path, db.url, storage=section), db=db)
    app.services.storage.check()
    yield app
    app.services.storage.close()


def swift_objects(store):
    conn = store._conn()
    _, items = conn.get_container(store.container)
    try:
        _, segments = conn.get_container(store.segment_container)
    except Exception:
        segments = []
    return [i["name"] for i in items], [s["name"] for s in segments]


def test_swift_streams_segments_and_puts_the_manifest_after_the_checks(swift_app, big_wheel, monkeypatch):
    store = swift_app.services.storage
    no_put_file(store, monkeypatch)
    testapp = webtest.TestApp(swift_app)
    upload(testapp, big_wheel, name="streamed", version="1.0")
    path = content_path(digests(big_wheel)["blake2_256_digest"], os.path.basename(big_wheel))
    objects, segments = swift_objects(store)
    assert sorted(objects) == [path, path + ".metadata"]
    assert len(segments) == 4 and all(s.startswith(path + "/") for s in segments)
    with open(big_wheel, "rb") as f:
        assert testapp.get("/" + path).body == f.read()
    assert store._conn().head_object(store.container, path)["x-static-large-object"].lower() == "true"

    store.delete(path)  # deleting the object removes its segments too
    assert swift_objects(store)[1] == []


def test_swift_a_refused_upload_leaves_no_manifest_and_no_segment(swift_app, big_wheel):
    testapp = webtest.TestApp(swift_app)
    upload(testapp, big_wheel, name="streamed", version="1.0", status=400, sha256_digest="0" * 64)
    assert swift_objects(swift_app.services.storage) == ([], [])


def test_swift_a_killed_upload_leaves_segments_leftovers_cleans(swift_app):
    store = swift_app.services.storage
    killed = store.begin_upload("packages/aa/bb/cc/killed-1.0.tar.gz")
    killed.write(os.urandom(9 * MiB))  # two whole 4 MiB segments and a third begun
    try:
        [stale] = _poll(lambda: list(leftovers.find(store, None, 0)))
        assert "large-object segments" in stale.name and stale.size >= 8 * MiB
    finally:
        killed.abort()
    assert swift_objects(store) == ([], [])


def _poll(get, tries=100):
    """What ``get`` returns once it is not empty (the segment thread sends in the background)."""
    import time

    for _ in range(tries):
        value = get()
        if value and all(getattr(v, "size", 0) >= 8 * MiB for v in value):
            return value
        time.sleep(0.1)
    return get()


def test_the_default_writer_stores_the_callers_copy(tmp_path):
    """A backend with no streaming writer of its own (local disk, plugins) stores the local copy."""
    store = storage.from_config({"backend": "local", "path": str(tmp_path / "s")}, data_dir=str(tmp_path))
    copy = tmp_path / "spool"
    copy.write_bytes(b"spooled bytes")
    up = store.begin_upload("packages/a/b.whl", local_copy=str(copy))
    up.write(b"spooled bytes")
    up.complete("packages/a/b.whl")
    with store.open("packages/a/b.whl") as f:
        assert f.read() == b"spooled bytes"


# -- a wheel streamed to Swift is spooled only in its tail --------------------------------------


def _sparse_body(data: bytes, boundary: str = "b0undary") -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="x-1.0-py3-none-any.whl"'
        "\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


def _read_into_sink(data, tmp_path, asked, *, reads_local_copy):
    """read_form of a body holding ``data``, streamed to a sink that reads back from ``data``
    (each range asked is appended to ``asked``)."""

    class Sink:
        def write(self, chunk):
            pass

        def abort(self):
            pass

        def read_back(self, start, stop):
            asked.append((start, stop))
            return data[start:stop]

    Sink.reads_local_copy = reads_local_copy
    body = _sparse_body(data)
    return read_form(
        io.BytesIO(body).read,
        content_type="multipart/form-data; boundary=b0undary",
        content_length=len(body),
        max_file_size=1 << 30,
        tmp_dir=str(tmp_path),
        open_sink=lambda fields, name, path: Sink(),
    )


@pytest.mark.parametrize("reads_back", [True, False])
def test_the_spool_keeps_only_the_tail_for_a_sink_that_reads_back(tmp_path, reads_back):
    """A sink that sends from the bytes written and reads them back: the spool file holds only
    the body's last TAIL bytes (a hole before them), and reading it reads the rest back."""
    from pypi.upload import spool

    data = os.urandom(3 * spool.TAIL)
    asked = []

    form = _read_into_sink(data, tmp_path, asked, reads_local_copy=not reads_back)
    try:
        spooled = form.file
        assert spooled.size == len(data) and spooled.sha256 == hashlib.sha256(data).hexdigest()
        assert os.path.getsize(spooled.path) == len(data)
        allocated = os.stat(spooled.path).st_blocks * 512
        if reads_back:
            assert len(data) - spooled.kept_from <= spool.TAIL + 2 * MiB
            assert allocated <= spool.TAIL + 2 * MiB  # the hole takes no disk
        else:
            assert spooled.kept_from == 0 and allocated >= len(data)
        with spooled.open() as f:
            assert f.read() == data
            f.seek(len(data) - 100)
            assert f.read() == data[-100:]
        assert bool(asked) == reads_back and all(stop <= spooled.kept_from for _, stop in asked)
    finally:
        form.close()


@pytest.fixture
def front_metadata_wheel(tmp_path):
    """20 MB with METADATA at the front (make_wheel writes the blob last): outside the kept tail."""
    return make_wheel(str(tmp_path), "streamed", "1.0", extra_bytes=20 * MiB)


def test_swift_checks_read_the_wheels_head_back_from_the_segments(
    swift_app, front_metadata_wheel, monkeypatch
):
    from storage.swift_upload import SwiftUpload

    store = swift_app.services.storage
    no_put_file(store, monkeypatch)
    calls = []
    real = SwiftUpload.read_back

    def spy(self, start, stop):
        calls.append((start, stop))
        return real(self, start, stop)

    monkeypatch.setattr(SwiftUpload, "read_back", spy)
    testapp = webtest.TestApp(swift_app)
    upload(testapp, front_metadata_wheel, name="streamed", version="1.0")
    assert calls and min(start for start, _ in calls) < 1024  # METADATA, near the start
    path = content_path(
        digests(front_metadata_wheel)["blake2_256_digest"], os.path.basename(front_metadata_wheel)
    )
    with open(front_metadata_wheel, "rb") as f:
        assert testapp.get("/" + path).body == f.read()
    assert testapp.get("/" + path + ".metadata").body.startswith(b"Metadata-Version")


def test_swift_a_wheel_refused_on_bytes_read_back_leaves_nothing(swift_app, tmp_path):
    wheel = make_wheel(
        str(tmp_path),
        "streamed",
        "1.0",
        extra_bytes=20 * MiB,
        metadata="Metadata-Version: 2.1\nName: other\nVersion: 1.0\n",
    )
    testapp = webtest.TestApp(swift_app)
    r = upload(testapp, wheel, name="streamed", version="1.0", status=400)
    assert "does not match the project" in r.text
    assert swift_objects(swift_app.services.storage) == ([], [])


def test_swift_a_failed_read_back_is_503_and_leaves_nothing(swift_app, front_metadata_wheel, monkeypatch):
    from storage.swift_upload import SwiftUpload

    def broken(self, start, stop):
        raise storage.StorageUnavailable("Swift: reading back: connection refused")

    monkeypatch.setattr(SwiftUpload, "read_back", broken)
    testapp = webtest.TestApp(swift_app)
    r = upload(testapp, front_metadata_wheel, name="streamed", version="1.0", status=503)
    assert "Storage unavailable" in r.text
    assert swift_objects(swift_app.services.storage) == ([], [])
    monkeypatch.undo()
    upload(testapp, front_metadata_wheel, name="streamed", version="1.0")  # no row was left behind


def test_reading_a_tail_spool_back_is_bounded(tmp_path, monkeypatch):
    """Reads outside the tail go to the store in READ_BACK_BLOCK pieces, at most MAX_READ_BACKS
    of them per file: past that, ReadBackError (the upload's 503), not a request per member."""
    from pypi.upload import spool

    monkeypatch.setattr(spool, "MAX_READ_BACKS", 3)
    data = os.urandom(3 * spool.TAIL)
    asked = []

    form = _read_into_sink(data, tmp_path, asked, reads_local_copy=False)
    try:
        with form.file.open() as f:
            for i in range(3):
                f.seek(i * 2 * spool.READ_BACK_BLOCK)
                assert f.read(10) == data[i * 2 * spool.READ_BACK_BLOCK :][:10]
            assert all(stop - start == spool.READ_BACK_BLOCK for start, stop in asked)
            f.seek(7 * spool.READ_BACK_BLOCK)
            with pytest.raises(spool.ReadBackError):
                f.read(10)
    finally:
        form.close()
