"""What a killed upload leaves behind (spooled body, local .tmp-* files, S3 incomplete
multipart uploads, Swift segments no manifest uses) is reported by fsck, removed by
fsck --repair and when the server starts; what is young (an upload in flight) stays."""

from __future__ import annotations

import io
import os
import time
import uuid

import pytest

from pypi.cli import main
from pypi.commands.serve import build_app
from pypi.index.db import Database
from pypi.operations import fsck, leftovers
from tests.services.live_server import write_config

DAY = 86400


def old_file(path: str, size: int = 1000, age: float = 2 * DAY) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    past = time.time() - age
    os.utime(path, (past, past))
    return path


@pytest.fixture
def crashed(config, db):
    """A killed upload's leftovers (two days old) and an upload in flight (just written)."""
    spool = leftovers.spool_dir(config.data_dir)
    store_root = os.path.join(config.data_dir, "packages")
    return {
        "old": [
            old_file(os.path.join(spool, "upload-k9dead")),
            old_file(os.path.join(store_root, "packages/ab/cd/ef01/.tmp-link-4242-1-99")),
            old_file(os.path.join(store_root, "packages/12/34/5678/.tmp-abc123")),
        ],
        "young": [
            old_file(os.path.join(spool, "upload-inflight"), age=10),
            old_file(os.path.join(store_root, "packages/ab/cd/ef01/.tmp-link-77-1-1"), age=10),
        ],
    }


@pytest.fixture
def ini(tmp_path, config, db_url):
    return write_config(
        str(tmp_path / "config.ini"),
        {
            "server": {"data_dir": config.data_dir},
            "database": {"url": db_url},
            "storage": {"backend": "local"},
        },
    )


def test_fsck_reports_and_repair_removes_a_crashed_uploads_leftovers(crashed, ini, capsys):
    assert main(["fsck", "--config", ini]) == 1
    out = capsys.readouterr().out
    assert out.count("temporary") >= 3 and "3 stale temporaries" in out
    assert "upload-k9dead" in out and ".tmp-link-4242-1-99" in out and ".tmp-abc123" in out
    assert "upload-inflight" not in out and ".tmp-link-77-1-1" not in out
    assert all(os.path.exists(p) for p in crashed["old"])  # a report only

    assert main(["fsck", "--repair", "--config", ini]) == 0
    assert "3 stale temporaries removed" in capsys.readouterr().out
    assert not any(os.path.exists(p) for p in crashed["old"])
    assert all(os.path.exists(p) for p in crashed["young"])
    assert main(["fsck", "--config", ini]) == 0


def test_the_server_removes_them_when_it_starts(crashed, config):
    build_app(config)
    deadline = time.monotonic() + 10
    while any(os.path.exists(p) for p in crashed["old"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(os.path.exists(p) for p in crashed["old"])
    assert all(os.path.exists(p) for p in crashed["young"])


def test_temporaries_max_age_is_configurable(config, tmp_path):
    from pypi.config import ConfigError, build

    raw = {"server": {"data_dir": config.data_dir, "temporaries_max_age": "12h"}}
    assert build(raw, base_dir=str(tmp_path)).server.temporaries_max_age == 12 * 3600
    assert build({}, base_dir=str(tmp_path)).server.temporaries_max_age == DAY
    with pytest.raises(ConfigError, match="temporaries_max_age"):
        build({"server": {"temporaries_max_age": "soon"}}, base_dir=str(tmp_path))


@pytest.fixture
def sqlite_db(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/fsck.sqlite3")
    db.migrate()
    yield db
    db.close()


def test_s3_incomplete_multipart_uploads_are_aborted(store_factory, moto_s3, sqlite_db):
    section, store = store_factory("s3-moto", prefix="idx")
    client = moto_s3.client()
    key = "idx/packages/aa/bb/cc/killed-1.0.tar.gz"
    started = client.create_multipart_upload(Bucket=section["bucket"], Key=key)
    client.upload_part(
        Bucket=section["bucket"], Key=key, UploadId=started["UploadId"], PartNumber=1, Body=b"x" * (5 << 20)
    )
    elsewhere = client.create_multipart_upload(Bucket=section["bucket"], Key="other-app/file")

    # (moto reports every upload as initiated in 2010, so the age filter is tested on local and Swift.)
    report = fsck.check(sqlite_db, store, temporaries_age=0)
    [problem] = report.of_kind(fsck.TEMPORARY)
    assert "packages/aa/bb/cc/killed-1.0.tar.gz" in problem.path and started["UploadId"] in problem.path
    assert not report.clean

    report = fsck.check(sqlite_db, store, repair=True, temporaries_age=0)
    assert report.clean and len(report.removed) == 1
    left = client.list_multipart_uploads(Bucket=section["bucket"]).get("Uploads", [])
    assert [u["UploadId"] for u in left] == [elsewhere["UploadId"]]  # outside the prefix: not ours


def test_swift_segments_no_manifest_uses_are_removed(store_factory, swift_service, sqlite_db):
    section, store = store_factory("swift", segment_size="1MB")
    store.put("packages/aa/big-1.0.tar.gz", io.BytesIO(os.urandom(int(2.5 * (1 << 20)))))  # in use
    conn = swift_service.connection()
    segments = section["container"] + "_segments"
    killed = f"packages/bb/killed-1.0.tar.gz/{uuid.uuid4().hex}"
    for n in range(2):
        conn.put_object(segments, f"{killed}/{n:08d}", contents=b"y" * 1000)
    time.sleep(1.5)  # listings round times up to the next second

    assert list(store.stale_temporaries(DAY)) == []
    [stale] = store.stale_temporaries(0)
    assert "packages/bb/killed-1.0.tar.gz" in stale.name and stale.size == 2000
    report = fsck.check(sqlite_db, store, repair=True, temporaries_age=0)
    assert len(report.removed) == 1
    _, left = conn.get_container(segments)
    assert left and not any(item["name"].startswith(killed) for item in left)
    assert store.open("packages/aa/big-1.0.tar.gz").read(10)  # the large object still reads
    conn.close()
