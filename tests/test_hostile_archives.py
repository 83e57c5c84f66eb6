"""Hostile archives: bombs (lying headers, deflate of zeros), members outside the tree, links out.

Each is refused with 400 naming the member, nothing is stored, and memory stays flat.
"""

from __future__ import annotations

import io
import tarfile
import tracemalloc

import pytest
from packaging.version import Version

from pypi.upload import distfile
from pypi.upload.distfile import InvalidFile
from tests.dists import make_sdist
from tests.hostile import Zeros, bomb_wheel, link, raw_tar_gz_lying_size, sdist_with, wheel_with, zip_with
from tests.test_upload import refused_cleanly
from tests.uploading import upload

MiB = 1024 * 1024


def test_metadata_bomb_with_lying_header_is_read_in_bounded_memory(tmp_path):
    # METADATA claims 200 bytes, inflates to 256 MiB: zipfile.read() would inflate it all at once.
    path = bomb_wheel(str(tmp_path), "demo", "1.0", inflated=256 * MiB)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidFile) as err:
            distfile.wheel_metadata(path, "demo-1.0-py3-none-any.whl", "demo", Version("1.0"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "Invalid distribution file" in str(err.value)
    assert peak < 4 * MiB, peak


def test_metadata_over_the_limit_is_refused_naming_the_member(testapp, app, db, users, tmp_path):
    big = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n\n" + b" " * (distfile.MAX_METADATA + 1)
    w = wheel_with(str(tmp_path), "demo", "1.0", extra={"demo-1.0.dist-info/METADATA": big})
    r = upload(testapp, w, name="demo", version="1.0", status=400)
    refused_cleanly(
        app, db, r, 400, "'demo-1.0.dist-info/METADATA' in demo-1.0-py3-none-any.whl is larger than"
    )


def test_pkg_info_over_the_limit_is_refused(testapp, app, db, users, tmp_path):
    big = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n\n" + b" " * (distfile.MAX_METADATA + 1)
    s = sdist_with(str(tmp_path), "demo", "1.0", [], pkg_info=big)
    r = upload(testapp, s, name="demo", version="1.0", status=400)
    refused_cleanly(app, db, r, 400, "'demo-1.0/PKG-INFO' in demo-1.0.tar.gz is larger than")


def test_gzip_bomb_sdist_is_refused(testapp, app, db, users, tmp_path):
    # 80 MiB of zeros gzip to ~80 KB: far past pypi.org's compression ratio of 50.
    info = tarfile.TarInfo("demo-1.0/zeros.bin")
    info.size = 80 * MiB
    s = sdist_with(str(tmp_path), "demo", "1.0", [(info, Zeros(info.size))])
    r = upload(testapp, s, name="demo", version="1.0", status=400)
    refused_cleanly(app, db, r, 400, "File exceeds compression ratio of 50")


def test_tar_member_claiming_huge_size_is_refused_without_inflating(testapp, app, db, users, tmp_path):
    s = raw_tar_gz_lying_size(str(tmp_path), "demo", "1.0", declared=1 << 40)
    r = upload(testapp, s, name="demo", version="1.0", status=400)
    refused_cleanly(app, db, r, 400, "File exceeds compression ratio of 50")


@pytest.mark.parametrize(
    "member",
    ["../evil.py", "demo/../../evil.py", "/etc/cron.d/evil", "\\evil.py", "C:/evil.py", "demo\\..\\..\\evil"],
)
def test_wheel_member_outside_the_archive(testapp, app, db, users, tmp_path, member):
    w = wheel_with(str(tmp_path), "demo", "1.0", extra={member: b"x"})
    r = upload(testapp, w, name="demo", version="1.0", status=400)
    refused_cleanly(app, db, r, 400, f"has a member with an unsafe path: {member!r}")


def test_wheel_symlink_pointing_outside(testapp, app, db, users, tmp_path):
    w = wheel_with(str(tmp_path), "demo", "1.0", symlinks={"demo/passwd": "../../etc/passwd"})
    r = upload(testapp, w, name="demo", version="1.0", status=400)
    refused_cleanly(
        app, db, r, 400, "has a link pointing outside the archive: 'demo/passwd' -> '../../etc/passwd'"
    )


def test_zip_sdist_absolute_symlink(testapp, app, db, users, tmp_path):
    z = zip_with(
        str(tmp_path),
        "demo-1.0.zip",
        {"demo-1.0/PKG-INFO": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"},
        symlinks={"demo-1.0/x": "/etc/shadow"},
    )
    r = upload(testapp, z, name="demo", version="1.0", status=400)
    refused_cleanly(app, db, r, 400, "'demo-1.0/x' -> '/etc/shadow'")


def _data(name: str) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = 1
    return info, io.BytesIO(b"x")


@pytest.mark.parametrize(
    "member, text",
    [
        (lambda: _data("../evil.py"), "unsafe path: '../evil.py'"),
        (lambda: _data("/tmp/evil.py"), "unsafe path: '/tmp/evil.py'"),
        (lambda: link("demo-1.0/l", "/etc/passwd"), "'demo-1.0/l' -> '/etc/passwd'"),
        (lambda: link("demo-1.0/l", "../../etc/passwd"), "'demo-1.0/l' -> '../../etc/passwd'"),
        (lambda: link("demo-1.0/h", "../outside", hard=True), "'demo-1.0/h' -> '../outside'"),
    ],
    ids=["dotdot", "absolute", "symlink-absolute", "symlink-up", "hardlink-up"],
)
def test_sdist_member_outside_the_archive(testapp, app, db, users, tmp_path, member, text):
    s = sdist_with(str(tmp_path), "demo", "1.0", [member()])
    r = upload(testapp, s, name="demo", version="1.0", status=400)
    refused_cleanly(app, db, r, 400, text)


def test_sdist_device_member_is_refused(testapp, app, db, users, tmp_path):
    dev = tarfile.TarInfo("demo-1.0/null")
    dev.type = tarfile.CHRTYPE
    s = sdist_with(str(tmp_path), "demo", "1.0", [dev])
    r = upload(testapp, s, name="demo", version="1.0", status=400)
    refused_cleanly(app, db, r, 400, "'demo-1.0/null' is not a regular file, folder or link")


def test_links_inside_the_archive_are_accepted(testapp, db, users, tmp_path):
    s = sdist_with(
        str(tmp_path),
        "demo",
        "1.0",
        [link("demo-1.0/docs/README", "../PKG-INFO"), link("demo-1.0/copy", "demo-1.0/PKG-INFO", hard=True)],
    )
    upload(testapp, s, name="demo", version="1.0")
    upload(testapp, make_sdist(str(tmp_path / ".."), "other", "1.0"), name="other", version="1.0")


# -- a live server refusing a 1 GiB METADATA bomb keeps its memory flat ------------------


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def _post_upload(url: str, path: str, name: str, version: str) -> tuple[int, str]:
    import base64
    import urllib.error
    import urllib.request

    from tests.conftest import PASSWORD
    from tests.uploading import multipart_upload

    content_type, body = multipart_upload(path, name, version, boundary="----cloudpypi-bomb")
    token = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        url + "/legacy/",
        data=body,
        headers={
            "Content-Type": content_type,
            "Authorization": f"Basic {token}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_live_server_refuses_1gib_metadata_bomb_with_flat_memory(tmp_path):
    from tests.conftest import PASSWORD
    from tests.dists import make_wheel
    from tests.services.live_server import cloudpypi, start_server, write_config

    config = write_config(
        str(tmp_path / "config.ini"),
        {
            "server": {"data_dir": str(tmp_path / "data")},
            "database": {"url": f"sqlite:///{tmp_path}/i.sqlite3"},
        },
    )
    cloudpypi("adduser", "alice", "--password-stdin", config=config, stdin=PASSWORD + "\n")
    server = start_server(config)
    try:
        (tmp_path / "ok").mkdir()
        status, text = _post_upload(
            server.url, make_wheel(str(tmp_path / "ok"), "demo", "1.0"), "demo", "1.0"
        )
        assert status == 200, text  # warm: every code path of an upload has run once
        idle = _peak_rss_kib(server.proc.pid)
        bomb = bomb_wheel(str(tmp_path), "demo", "2.0", inflated=1 << 30)
        status, text = _post_upload(server.url, bomb, "demo", "2.0")
        peak = _peak_rss_kib(server.proc.pid)
    finally:
        server.stop()
    assert status == 400, text
    assert "demo-2.0.dist-info/METADATA" in text
    print(f"peak RSS idle {idle} KiB, after the 1 GiB METADATA bomb {peak} KiB (+{peak - idle} KiB)")
    assert peak - idle < 20 * 1024, (idle, peak)


def test_zip_with_too_many_members_is_refused_before_parsing(testapp, app, db, users, tmp_path, monkeypatch):
    import zipfile

    monkeypatch.setattr(distfile, "MAX_MEMBERS", 50)
    w = wheel_with(str(tmp_path), "demo", "1.0", extra={f"demo/m{i}.py": b"" for i in range(60)})
    parsed = []
    real = zipfile.ZipFile.__init__
    monkeypatch.setattr(
        zipfile.ZipFile, "__init__", lambda self, *a, **kw: parsed.append(a) or real(self, *a, **kw)
    )
    r = upload(testapp, w, name="demo", version="1.0", status=400)
    refused_cleanly(app, db, r, 400, "demo-1.0-py3-none-any.whl has more than 50 members.")
    assert parsed == []  # refused from the end record, before zipfile built 60 headers
