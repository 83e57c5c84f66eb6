"""The mirror's per-file and start-up savings keep their results (issue 10)."""

from __future__ import annotations

import os
import subprocess
import sys

from packaging.metadata import parse_email
from packaging.version import Version

from pypi.upload.distfile import wheel_metadata, wheel_metadata_parsed
from pypi.upstream.records import release_meta_from
from tests.dists import make_wheel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

META = (
    "Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.2\nSummary: a demo\n"
    "Keywords: one,two\nRequires-Dist: requests>=2\nRequires-Dist: idna\n"
    "Project-URL: Home, https://example.invalid/\n\n"
)


def test_wheel_metadata_parsed_gives_the_fields_parsed_once(tmp_path):
    path = make_wheel(str(tmp_path), "demo-pkg", "1.2", metadata=META)
    filename = os.path.basename(path)
    data, raw = wheel_metadata_parsed(path, filename, "demo-pkg", Version("1.2"))
    assert data == wheel_metadata(path, filename, "demo-pkg", Version("1.2"))
    assert raw == parse_email(data)[0]
    # The release columns from the fields parsed on the way are those parsed afresh.
    assert release_meta_from(data, raw) == release_meta_from(data)
    assert release_meta_from(data, raw)["requires_dist"] == ["requests>=2", "idna"]


def test_cli_start_up_does_not_import_the_web_app():
    """``cloudpypi mirror`` (and every command but serve) starts without webob, jinja2 or the
    views, without the upload checks' email and URL validators, and without an argon2 hash at import."""
    code = (
        "import sys, argon2\n"
        "hashed = []\n"
        "argon2.PasswordHasher.hash = lambda self, p: hashed.append(p)\n"
        "import pypi.cli\n"
        "pypi.cli.build_parser()\n"
        "heavy = ('pypi.app', 'webob', 'jinja2', 'email_validator', 'rfc3986')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "print(','.join(heavy), len(hashed))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.split() == ["0"]


def test_the_dummy_hash_is_made_once_on_first_use():
    from pypi.index import auth

    auth._dummy_hash.cache_clear()
    made = auth._dummy_hash()
    assert made.startswith("$argon2id$") and auth._dummy_hash() is made


def test_version_of_is_cached_and_still_right():
    from pypi.upstream.client import name_and_version
    from pypi.upstream.filters import version_of

    name_and_version.cache_clear()  # the one cached parse version_of reads
    assert version_of("demo_pkg-1.2-py3-none-any.whl") == "1.2"
    assert version_of("demo_pkg-1.2-py3-none-any.whl") == "1.2"
    assert name_and_version.cache_info().hits == 1
    assert name_and_version("demo_pkg-1.2-py3-none-any.whl") == ("demo-pkg", "1.2")
    assert version_of("demo-pkg-2.0rc1.tar.gz") == "2.0rc1"
    assert version_of("not a dist.txt") is None
    assert version_of("bad-name-x-y.whl") is None
