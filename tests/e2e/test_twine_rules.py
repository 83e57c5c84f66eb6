"""twine against the upload rules: retries, --skip-existing, file reuse, credentials and roles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.dists import make_wheel
from tests.e2e import clients
from tests.e2e.clients import get_json, sha256_of
from tests.e2e.conftest import Live

pytestmark = pytest.mark.e2e

TWINE = [sys.executable, "-m", "twine"]


def twine_upload(live: Live, home: Path, *files: Path, **kw) -> subprocess.CompletedProcess:
    return clients.twine_upload(live.legacy, *files, home=home, **kw)


def test_skip_existing_and_file_reuse(live: Live, twine_old: list[str], tmp_path: Path) -> None:
    first = Path(make_wheel(str(tmp_path), "Skip-Demo", "1.0"))
    ok = twine_upload(live, tmp_path, first, twine=twine_old, extra=("--skip-existing",))
    assert ok.returncode == 0, ok.stdout
    # The very same file again: a retry, which succeeds with or without --skip-existing.
    again = twine_upload(live, tmp_path, first, twine=twine_old, extra=("--skip-existing",))
    assert again.returncode == 0, again.stdout
    assert twine_upload(live, tmp_path, first).returncode == 0

    # A different file under the same name is refused with pypi.org's words ...
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = Path(make_wheel(str(other_dir), "Skip-Demo", "1.0", module_code="VERSION = 'changed'\n"))
    assert other.name == first.name and sha256_of(other) != sha256_of(first)
    refused = twine_upload(live, tmp_path, other)
    assert refused.returncode != 0
    assert "400" in refused.stdout and "File already exists" in refused.stdout, refused.stdout

    # ... which is what --skip-existing looks for: twine skips it and succeeds.
    skipped = twine_upload(live, tmp_path, other, twine=twine_old, extra=("--skip-existing",))
    assert skipped.returncode == 0, skipped.stdout
    assert "Skipping" in skipped.stdout, skipped.stdout

    files = get_json(f"{live.url}/pypi/skip-demo/json")["urls"]
    assert [(f["filename"], f["digests"]["sha256"]) for f in files] == [(first.name, sha256_of(first))]


def test_wrong_password_is_403(live: Live, tmp_path: Path) -> None:
    wheel = Path(make_wheel(str(tmp_path), "Password-Demo", "1.0"))
    refused = twine_upload(live, tmp_path, wheel, password="not the password")
    assert refused.returncode != 0
    assert "403" in refused.stdout, refused.stdout
    assert "Invalid or non-existent authentication information" in refused.stdout, refused.stdout
    unknown = twine_upload(live, tmp_path, wheel, user="mallory")
    assert unknown.returncode != 0 and "403" in unknown.stdout, unknown.stdout
    with pytest.raises(OSError, match="404"):
        get_json(f"{live.url}/pypi/password-demo/json")


def test_second_user_needs_a_role(live: Live, tmp_path: Path) -> None:
    v1 = Path(make_wheel(str(tmp_path), "Owned-Demo", "1.0"))
    v2 = Path(make_wheel(str(tmp_path), "Owned-Demo", "1.1"))
    assert twine_upload(live, tmp_path, v1, user="alice").returncode == 0

    refused = twine_upload(live, tmp_path, v2, user="bob")
    assert refused.returncode != 0
    assert "403" in refused.stdout and "isn't allowed to upload to project" in refused.stdout, refused.stdout
    assert list(get_json(f"{live.url}/pypi/owned-demo/json")["releases"]) == ["1.0"]

    live.cli("addrole", "Owned-Demo", "bob", "maintainer")
    allowed = twine_upload(live, tmp_path, v2, user="bob")
    assert allowed.returncode == 0, allowed.stdout
    body = get_json(f"{live.url}/pypi/owned-demo/json")
    assert sorted(body["releases"]) == ["1.0", "1.1"]
    assert body["info"]["version"] == "1.1"
