"""Metadata pypi.org refuses is refused here too (400, its message, nothing stored), and
Metadata 2.4's License-Expression, License-File and Dynamic are stored and shown."""

from __future__ import annotations

import os

import pytest

from tests.dists import make_wheel
from tests.test_upload import refused_cleanly
from tests.uploading import upload

SEE = "See https://packaging.python.org/specifications/core-metadata for more information."


@pytest.fixture
def wheel(tmp_path):
    return make_wheel(str(tmp_path), "demo", "1.0")


@pytest.mark.parametrize(
    "fields, text",
    [
        ({"summary": "x" * 513}, f"'summary' field must be 512 characters or less. {SEE}"),
        (
            {"version": "1.0+local"},
            "The use of local versions in '1.0+local' is not allowed. See https://packaging.python.org/"
            "en/latest/specifications/version-specifiers/#local-version-identifiers for more information.",
        ),
        (
            {"classifiers": ["Programming Language :: Cobol++"]},
            "'Programming Language :: Cobol++' is not a valid classifier.",
        ),
        (
            {"classifiers": ["Natural Language :: Ukranian"]},
            "The classifier 'Natural Language :: Ukranian' has been deprecated, "
            "use one of ['Natural Language :: Ukrainian'] instead.",
        ),
        (
            {"requires_dist": ["pkg @ https://example.org/pkg.whl"]},
            "Can't have direct dependency: pkg @ https://example.org/pkg.whl",
        ),
        ({"home_page": "javascript:alert(1)"}, "'javascript:alert(1)' is not a valid url."),
        (
            {"download_url": "ftp://example.org/demo.tar.gz"},
            "'ftp://example.org/demo.tar.gz' is not a valid url.",
        ),
        (
            {"project_urls": ["Docs, javascript:alert(document.cookie)"]},
            "'javascript:alert(document.cookie)' is not a valid url",
        ),
        ({"project_urls": ["Docs, file:///etc/passwd"]}, "'file:///etc/passwd' is not a valid url"),
        (
            {"project_urls": ["L" * 33 + ", https://example.org/"]},
            f"'{'L' * 33}' must be 32 characters or less.",
        ),
        ({"project_urls": [", https://example.org/"]}, "Must have a label."),
        ({"project_urls": ["Docs, "]}, "Must have a URL."),
        (
            {"author_email": "not an address"},
            "is not a valid email address: An email address must have an @-sign.",
        ),
        ({"maintainer_email": "Bob <bob@@example.org>"}, "is not a valid email address"),
        ({"summary": "nul\x00byte"}, "Invalid value for summary. Error: Null bytes are not allowed."),
        ({"description": "a\x00b"}, "Invalid value for description. Error: Null bytes are not allowed."),
        ({"keywords": "\x00"}, "Invalid value for keywords. Error: Null bytes are not allowed."),
        (
            {"metadata_version": "2.4", "license_expression": "MIT OR Bogus-1.0"},
            "Invalid value for License-Expression.",
        ),
        (
            {"metadata_version": "2.4", "license_expression": "MIT", "license": "MIT License"},
            "License is deprecated when License-Expression is present. "
            "Only License-Expression should be present.",
        ),
        (
            {"metadata_version": "2.4", "license_file": ["../../etc/passwd"]},
            "Invalid value for License-File.",
        ),
        ({"metadata_version": "2.4", "dynamic": ["Name"]}, "Invalid value for Dynamic."),
        ({"metadata_version": "2.4", "dynamic": ["Frobnicate"]}, "Invalid value for Dynamic."),
    ],
    ids=lambda v: str(v)[:40] if isinstance(v, dict) else None,
)
def test_metadata_pypi_refuses(testapp, app, db, users, wheel, fields, text):
    version = fields.get("version", "1.0")
    path = wheel if version == "1.0" else make_wheel(os.path.dirname(wheel), "demo", version)
    r = upload(testapp, path, name="demo", status=400, **{"version": "1.0", **fields})
    refused_cleanly(app, db, r, 400, text)


def test_filename_too_long_is_refused_up_front(testapp, app, db, users, tmp_path):
    version = "1.0.post" + "1" * 240
    w = make_wheel(str(tmp_path), "demo", "1.0")
    filename = f"demo-{version}-py3-none-any.whl"
    r = upload(testapp, w, name="demo", version=version, filename=filename, status=400)
    refused_cleanly(app, db, r, 400, "Filename is too long: 'demo-1.0.post1111")
    assert "the limit is 230 bytes" in r.text


def test_non_ascii_filename_matching_only_after_case_folding(testapp, app, db, users, tmp_path):
    # U+212A KELVIN SIGN lowers to "k": the name matches the project "kit" only after folding.
    w = make_wheel(str(tmp_path), "kit", "1.0")
    r = upload(testapp, w, name="kit", version="1.0", filename="\u212ait-1.0-py3-none-any.whl", status=400)
    refused_cleanly(app, db, r, 400, "should contain the normalized project name 'kit', not '")
    assert "not '\u212ait'" in r.text


@pytest.mark.parametrize("platform", ["linux_x86_64", "macosx_10_9_bogus", "manylinux_2_17_sparc", "evil"])
def test_unsupported_platform_tag(testapp, app, db, users, tmp_path, platform):
    w = make_wheel(str(tmp_path), "demo", "1.0", tag=f"cp311-cp311-{platform}")
    r = upload(testapp, w, name="demo", version="1.0", status=400)
    refused_cleanly(
        app, db, r, 400, f"Binary wheel 'demo-1.0-cp311-cp311-{platform}.whl' has an unsupported platform tag"
    )


@pytest.mark.parametrize(
    "platform",
    ["manylinux_2_17_x86_64.manylinux2014_x86_64", "macosx_11_0_arm64", "win_amd64", "musllinux_1_2_aarch64"],
)
def test_supported_platform_tags(testapp, users, tmp_path, platform):
    w = make_wheel(str(tmp_path), "demo", "1.0", tag=f"cp311-cp311-{platform}")
    upload(testapp, w, name="demo", version="1.0")


def test_valid_metadata_is_accepted(testapp, users, wheel):
    upload(
        testapp,
        wheel,
        name="demo",
        version="1.0",
        summary="s" * 512,
        classifiers=["Programming Language :: Python :: 3", "License :: OSI Approved :: MIT License"],
        requires_dist=["requests>=2", "idna; extra == 'x'"],
        provides_extra=["x"],
        home_page="https://example.org/",
        project_urls=["Source, https://example.org/src", "L" * 32 + ", http://example.org/"],
        author_email="Alice <alice@example.org>, bob@example.org",
    )


def test_metadata_2_4_fields_stored_and_shown(testapp, db, users, wheel):
    upload(
        testapp,
        wheel,
        name="demo",
        version="1.0",
        metadata_version="2.4",
        license_expression="mit or apache-2.0",
        license_file=["LICENSE", "licenses/NOTICE.txt"],
        dynamic=["Requires-Dist", "license-file"],
    )
    info = testapp.get("/pypi/demo/json").json["info"]
    assert info["license_expression"] == "MIT OR Apache-2.0"  # canonical SPDX, as packaging gives it
    assert info["license_files"] == ["LICENSE", "licenses/NOTICE.txt"]
    assert info["dynamic"] == ["Requires-Dist", "license-file"]
    assert testapp.get("/pypi/demo/1.0/json").json["info"]["license_expression"] == "MIT OR Apache-2.0"
    page = testapp.get("/project/demo/").text
    assert "License Expression: <code>MIT OR Apache-2.0</code>" in page
    assert "License Files: LICENSE, licenses/NOTICE.txt" in page
    with db.transaction() as tx:
        row = tx.one("SELECT license_expression, license_files, dynamic FROM releases")
    assert row["license_expression"] == "MIT OR Apache-2.0"


def test_release_without_2_4_fields_has_nulls(testapp, users, wheel):
    upload(testapp, wheel, name="demo", version="1.0")
    info = testapp.get("/pypi/demo/json").json["info"]
    assert info["license_expression"] is None and info["license_files"] is None and info["dynamic"] is None


def test_distutils_unknown_values_are_dropped(testapp, users, wheel):
    # distutils sends "UNKNOWN" for home_page, author_email, ...: dropped, as pypi.org does.
    upload(testapp, wheel, name="demo", version="1.0", home_page="UNKNOWN", author_email="UNKNOWN")
    info = testapp.get("/pypi/demo/json").json["info"]
    assert info["home_page"] == "" and info["author_email"] == ""
