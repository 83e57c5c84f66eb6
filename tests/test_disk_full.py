"""A full disk under the upload spool (data_dir/tmp): 507 with a clear message, nothing saved,
the server stays up and the next upload that fits works."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from pypi.upload import spool
from tests.dists import make_wheel
from tests.uploading import upload


def counts(db) -> dict[str, int]:
    with db.transaction() as tx:
        return {t: int(tx.scalar(f"SELECT COUNT(*) FROM {t}")) for t in ("projects", "files", "journal")}


@pytest.fixture
def tiny_spool(config):
    """A real 2 MiB tmpfs mounted as data_dir/tmp (skipped where mount is not permitted)."""
    tmp = os.path.join(config.data_dir, "tmp")
    os.makedirs(tmp, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", tmp], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield tmp
    finally:
        subprocess.run(["umount", "-l", tmp], check=False)


def test_a_full_spool_disk_is_507_and_the_server_stays_up(testapp, app, db, users, tmp_path, tiny_spool):
    wheel = make_wheel(str(tmp_path), "Demo.Pkg", "1.0")
    r = upload(testapp, wheel, name="Demo.Pkg", version="1.0", content=os.urandom(3 << 20), status=507)
    assert r.status.startswith("507 Insufficient Storage") and "disk for uploads is full" in r.status
    assert "nothing was saved" in r.text
    assert os.listdir(tiny_spool) == []  # the partial spool file went: the disk is free again
    assert counts(db) == {"projects": 0, "files": 0, "journal": 0}
    upload(testapp, wheel, name="Demo.Pkg", version="1.0")  # a file that fits goes through
    assert counts(db)["files"] == 1


class _FullDisk:
    """A spool file that takes ``room`` bytes, then fails with ``code`` like a full disk."""

    def __init__(self, raw, room: int, code: int) -> None:
        self.raw, self.room, self.code = raw, room, code

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            raise OSError(self.code, os.strerror(self.code))
        self.room -= len(data)
        return self.raw.write(data)

    def flush(self) -> None:  # the spool flushes before a streaming writer reads the file
        self.raw.flush()

    def close(self) -> None:
        self.raw.close()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_disk_full_at_the_spool_write_is_507(testapp, app, db, users, tmp_path, monkeypatch, code):
    real_fdopen = os.fdopen
    monkeypatch.setattr(spool.os, "fdopen", lambda fd, mode: _FullDisk(real_fdopen(fd, mode), 1 << 20, code))
    wheel = make_wheel(str(tmp_path), "Demo.Pkg", "1.0")
    r = upload(testapp, wheel, name="Demo.Pkg", version="1.0", content=os.urandom(3 << 20), status=507)
    assert r.status.startswith("507 Insufficient Storage") and "nothing was saved" in r.text
    assert r.headers["Cache-Control"].startswith("private")
    assert os.listdir(os.path.join(app.services.config.data_dir, "tmp")) == []
    assert counts(db)["files"] == 0
    monkeypatch.undo()
    upload(testapp, wheel, name="Demo.Pkg", version="1.0")


def test_other_os_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    real_fdopen = os.fdopen
    monkeypatch.setattr(spool.os, "fdopen", lambda fd, mode: _FullDisk(real_fdopen(fd, mode), 0, errno.EIO))
    body = b'--b\r\nContent-Disposition: form-data; name="content"; filename="x.whl"\r\n\r\nabc\r\n--b--\r\n'
    chunks = [body]
    with pytest.raises(OSError) as raised:
        spool.read_form(
            lambda n: chunks.pop() if chunks else b"",
            content_type="multipart/form-data; boundary=b",
            content_length=len(body),
            max_file_size=1 << 20,
            tmp_dir=str(tmp_path),
        )
    assert raised.value.errno == errno.EIO and os.listdir(tmp_path) == []
