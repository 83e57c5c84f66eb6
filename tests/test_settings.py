"""The shared settings grammar (cloudpypi_base.settings) and plugin loader (cloudpypi_base.plugins)."""

from __future__ import annotations

import logging

import pytest

import storage
from cdn import purge
from cloudpypi_base import plugins
from cloudpypi_base.settings import Section, SettingError, format_size


def section(**values):
    return Section(values, name="test", base_dir="/srv/data", environ={"MY_SECRET": "s3cr3t"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4096", 4096), ("10M", 10 * 1024**2), ("10MB", 10 * 1024**2), ("1GiB", 1024**3), ("512 k", 512 * 1024)],
)
def test_sizes(text, expected):
    assert section(v=text).size("v", None) == expected


@pytest.mark.parametrize(
    ("text", "expected"), [("30", 30.0), ("30s", 30.0), ("250ms", 0.25), ("5m", 300.0), ("2h", 7200.0)]
)
def test_durations(text, expected):
    assert section(v=text).seconds("v", None) == expected


def test_booleans_lists_paths():
    s = section(a="Yes", b="off", items="a, b  c", rel="pkgs", home="~/x", absolute="/tmp/y")
    assert s.flag("a", False) is True and s.flag("b", True) is False and s.flag("unset", True) is True
    assert s.list("items") == ["a", "b", "c"]
    assert s.path("rel") == "/srv/data/pkgs"
    assert s.path("absolute") == "/tmp/y"
    assert not s.path("home").startswith("~")


def test_secrets_from_the_value_a_file_or_the_environment(tmp_path):
    (tmp_path / "key.txt").write_text("from-file\n")
    base = {"base_dir": str(tmp_path), "environ": {"MY_SECRET": "from-env"}, "name": "storage"}
    assert Section({"key": "plain"}, **base).secret("key") == "plain"
    assert Section({"key_file": "key.txt"}, **base).secret("key") == "from-file"
    assert Section({"key_env": "MY_SECRET"}, **base).secret("key") == "from-env"
    assert Section({}, **base).secret("key") is None
    with pytest.raises(SettingError, match=r"\[storage\] key_file: set only one of key, key_file") as exc:
        Section({"key": "plain", "key_file": "key.txt"}, **base).secret("key")
    assert "plain" not in str(exc.value)
    with pytest.raises(SettingError, match="MISSING is not set"):
        Section({"key_env": "MISSING"}, **base).secret("key")


@pytest.mark.parametrize(
    ("method", "text", "message"),
    [
        ("size", "ten", "is not a size"),
        ("seconds", "soon", "is not a duration"),
        ("flag", "maybe", "is not true or false"),
        ("whole", "1.5", "is not a whole number"),
    ],
)
def test_errors_name_the_section_and_key_with_the_callers_class(method, text, message):
    class Mine(Exception):
        def __init__(self, message, key):
            super().__init__(message)
            self.key = key

    s = Section({"k": text}, name="cdn", error=Mine)
    args = ("k", False) if method == "flag" else ("k", None)
    with pytest.raises(Mine, match=rf"^\[cdn\] k: '{text}' {message}") as exc:
        getattr(s, method)(*args)
    assert exc.value.key == "k"


def test_bounds():
    with pytest.raises(SettingError, match="out of range"):
        section(v="1K").size("v", None, low=1024 * 1024)
    assert section(v="0").whole("v", 5, low=0, high=3) == 0


def test_format_size():
    assert [format_size(n) for n in (512, 1536, 3 * 1024**2, 2 * 1024**3)] == [
        "512 B",
        "1.5 KiB",
        "3.0 MiB",
        "2.0 GiB",
    ]


# -- plugins --------------------------------------------------------------------------


class LegacyStore(storage.Storage):
    """A plugin backend registered in the old unversioned group."""

    @classmethod
    def from_config(cls, settings, *, data_dir):
        return cls()

    def _put(self, path, local_file, headers): ...
    def _open(self, path, start, stop): ...
    def _stat(self, path): ...
    def _delete(self, path): ...
    def _list(self, prefix):
        return iter(())


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    """An installed distribution registering plugins in the old and the new groups."""
    info = tmp_path / "cloudpypi_test_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cloudpypi-test-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[cloudpypi.storage]\nlegacy = tests.test_settings:LegacyStore\n\n"
        "[cloudpypi.storage.v1]\nnotastore = tests.test_settings:section\n\n"
        "[cloudpypi.purgers]\nold-none = cdn.purge:NullPurger\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_groups_carry_the_interface_version():
    assert storage.GROUP == "cloudpypi.storage.v1" and purge.GROUP == "cloudpypi.purgers.v1"
    assert {"local", "s3", "swift"} <= set(storage.known_backends())


def test_a_plugin_in_the_old_group_loads_with_a_deprecation_line(plugin_dist, caplog):
    caplog.set_level(logging.WARNING, logger="cloudpypi_base.plugins")
    assert storage.backend_class("legacy") is LegacyStore
    assert "deprecated" in caplog.text and "cloudpypi.storage.v1" in caplog.text
    assert purge.purger_class("old-none") is purge.NullPurger
    assert "legacy" in storage.known_backends() and "old-none" in purge.known_purgers()


def test_a_plugin_of_the_wrong_kind_is_refused(plugin_dist):
    with pytest.raises(storage.StorageMisconfigured, match="is not a storage.base.Storage subclass"):
        storage.backend_class("notastore")


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"'nope' is unknown; known things: a, b"):
        plugins.load_class(
            "nope",
            builtins={"a": ("x", "X", None), "b": ("y", "Y", None)},
            group="cloudpypi.nothing.v1",
            base=object,
            error=ValueError,
            setting="[x] kind",
            plural="things",
        )


def test_backends_and_purgers_read_the_shared_grammar(tmp_path, monkeypatch):
    from storage.s3 import S3Storage
    from storage.swift import SwiftStorage

    monkeypatch.setenv("TEST_S3_SECRET", "from-the-environment")
    s3 = S3Storage.from_config(
        {
            "bucket": "b-1",
            "access_key_id": "AKID",
            "secret_access_key_env": "TEST_S3_SECRET",
            "multipart_chunksize": "6MiB",
            "read_timeout": "2m",
        },
        data_dir=str(tmp_path),
    )
    assert s3.client._request_signer._credentials.secret_key == "from-the-environment"
    assert s3.transfer_config.multipart_chunksize == 6 * 1024**2
    assert s3.client.meta.config.read_timeout == 120
    swift = SwiftStorage.from_config(
        {
            "auth_url": "http://swift.test/auth/v1.0",
            "user": "u",
            "key_env": "TEST_S3_SECRET",
            "container": "c",
            "timeout": "1m",
            "segment_size": "1GiB",
        },
        data_dir=str(tmp_path),
    )
    assert swift.segment_size == 1024**3 and swift._template.timeout == 60
    with pytest.raises(storage.StorageMisconfigured) as exc:
        S3Storage.from_config({"bucket": "b-1", "read_timeout": "soon"}, data_dir=str(tmp_path))
    assert exc.value.key == "read_timeout" and "[storage] read_timeout" in str(exc.value)
    assert purge.seconds({"timeout": "5m"}, "timeout", 10.0) == 300.0
    with pytest.raises(purge.PurgerMisconfigured, match=r"\[cdn\] soft: 'maybe' is not true or false"):
        purge.flag({"soft": "maybe"}, "soft", False)
