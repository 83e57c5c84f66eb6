"""What an upload reads back of the file it received: the digests are computed while the body
arrives, and the archive checks read the zip's end record, its central directory and the
members they need (METADATA), never a pass over the whole file."""

from __future__ import annotations

import io
import os

import pytest
import webtest
from packaging.version import Version

from pypi.app import make_app
from pypi.upload import distfile, spool
from tests.backends import s3_moto_section
from tests.conftest import make_config
from tests.dists import make_wheel
from tests.uploading import upload

MiB = 1024 * 1024
#: The most the checks may read of a small-membered wheel: end record, central directory,
#: METADATA and the read-ahead of the buffered file around them.
DIRECTORY_READS = 256 * 1024


class CountingFileIO(io.FileIO):
    """A raw file that counts the bytes read from it (what reaches the disk or page cache)."""

    total = 0

    def readinto(self, buffer) -> int:
        n = super().readinto(buffer)
        CountingFileIO.total += n or 0
        return n

    def readall(self) -> bytes:
        data = super().readall()
        CountingFileIO.total += len(data)
        return data


def counting_open(path, mode="r", *args, **kwargs):
    assert mode == "rb", mode
    return io.BufferedReader(CountingFileIO(path, "rb"))


@pytest.fixture
def counted(monkeypatch):
    """Bytes read through ``open`` in pypi.upload.distfile (every file the archive checks open)."""
    CountingFileIO.total = 0
    monkeypatch.setattr(distfile, "open", counting_open, raising=False)
    return CountingFileIO


def test_wheel_checks_read_the_central_directory_and_metadata_only(tmp_path, counted):
    path = make_wheel(str(tmp_path), "big", "1.0", extra_bytes=32 * MiB)
    data = distfile.wheel_metadata(path, os.path.basename(path), "big", Version("1.0"))
    assert b"Name: big" in data
    assert 0 < counted.total < DIRECTORY_READS, counted.total
    assert os.path.getsize(path) > 32 * MiB


def test_zip_sdist_checks_read_the_central_directory_and_pkg_info_only(tmp_path, counted):
    import zipfile

    path = os.path.join(str(tmp_path), "big-1.0.zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("big-1.0/PKG-INFO", "Metadata-Version: 2.1\nName: big\nVersion: 1.0\n")
        zf.writestr("big-1.0/blob.bin", os.urandom(32 * MiB))
    assert b"Name: big" in distfile.check_sdist(path, "big-1.0.zip")
    assert 0 < counted.total < DIRECTORY_READS, counted.total


@pytest.fixture
def spool_reads(monkeypatch):
    """Bytes read through ``SpooledFile.open`` (a second pass over the received file)."""
    seen = {"bytes": 0}
    real_open = spool.SpooledFile.open

    def open_counted(self):
        f = real_open(self)
        read = f.read

        def counted_read(size=-1):
            data = read(size)
            seen["bytes"] += len(data)
            return data

        f.read = counted_read
        return f

    monkeypatch.setattr(spool.SpooledFile, "open", open_counted)
    return seen


def test_a_wheel_upload_reads_the_received_file_only_for_its_directory(
    testapp, users, tmp_path, counted, spool_reads
):
    wheel = make_wheel(str(tmp_path), "big", "1.0", extra_bytes=16 * MiB)
    upload(testapp, wheel, name="big", version="1.0")
    assert spool_reads["bytes"] == 0  # digests came from the body as it arrived
    assert 0 < counted.total < DIRECTORY_READS, counted.total


def test_a_streamed_s3_upload_reads_the_spool_only_to_send_its_parts(
    tmp_path, db, users, moto_s3, moto_s3_bucket, counted, spool_reads, monkeypatch
):
    section = s3_moto_section(moto_s3, moto_s3_bucket, prefix="idx", multipart_chunksize="5MB")
    app = make_app(make_config(tmp_path, db.url, storage=section), db=db)
    parts = {"bytes": 0}
    real_pread = os.pread

    def pread(fd, n, offset):
        data = real_pread(fd, n, offset)
        parts["bytes"] += len(data)
        return data

    monkeypatch.setattr(os, "pread", pread)
    try:
        wheel = make_wheel(str(tmp_path), "big", "1.0", extra_bytes=12 * MiB)
        upload(webtest.TestApp(app), wheel, name="big", version="1.0")
    finally:
        app.services.storage.close()
    size = os.path.getsize(wheel)
    assert spool_reads["bytes"] == 0
    assert 0 < counted.total < DIRECTORY_READS, counted.total
    # The parts are read from the spool as they are sent. botocore reads each once more to
    # sign its SHA-256 on a plain-http endpoint (moto here; over https with a checksum it does
    # not): never more than that.
    assert size <= parts["bytes"] <= 2 * size, (parts["bytes"], size)


def test_an_upload_logs_where_its_time_went(testapp, users, tmp_path, caplog):
    wheel = make_wheel(str(tmp_path), "timed", "1.0")
    with caplog.at_level("INFO", logger="pypi.views.upload"):
        upload(testapp, wheel, name="timed", version="1.0")
    [line] = [r.getMessage() for r in caplog.records if "timed-1.0" in r.getMessage()]
    assert f"({os.path.getsize(wheel)} bytes)" in line
    for step in ("body received in", "checks", "store", "commit"):
        assert step in line
