"""Reading config.ini and CLOUDPYPI_* overrides; check-config output and errors."""

from __future__ import annotations

import pytest

from pypi import config as config_mod
from pypi.config import ConfigError, load
from tests.services.live_server import cloudpypi, write_config


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = load(None, environ={})
    assert c.source is None
    assert c.database.url == f"sqlite:///{tmp_path}/data/cloudpypi.sqlite3"
    assert c.storage.backend == "local" and c.storage.serve == "proxy"
    assert c.webui.max_upload_size == 100 * 1024 * 1024
    assert c.cdn.files_url == "" and c.cdn.purge == "none"
    assert (c.server.host, c.server.port) == ("127.0.0.1", 8080)


def test_file_and_environment_overrides(tmp_path):
    path = write_config(
        str(tmp_path / "c.ini"),
        {
            "webui": {"max_upload_size": "2G", "url": "https://pypi.example.org/"},
            "database": {"url": "sqlite:///db/x.sqlite3"},
            "cdn": {"files_url": "https://files.example.org/packages"},
        },
    )
    env = {
        "CLOUDPYPI_CONFIG": path,
        "CLOUDPYPI_STORAGE_BACKEND": "s3",
        "CLOUDPYPI_STORAGE_BUCKET": "b1",
        "CLOUDPYPI_WEBUI_MAX_UPLOAD_SIZE": "300M",
    }
    c = load(None, environ=env)
    assert c.source == path
    assert c.webui.max_upload_size == 300 * 1024 * 1024  # the environment wins
    assert c.webui.url == "https://pypi.example.org"
    assert c.database.url == f"sqlite:///{tmp_path}/db/x.sqlite3"  # relative to the file
    assert c.storage.backend == "s3" and c.storage.options["bucket"] == "b1"
    assert c.cdn.files_url == "https://files.example.org/packages/"


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"webui": {"max_upload_size": "lots"}}, "[webui] max_upload_size"),
        ({"webui": {"url": "not a url"}}, "[webui] url"),
        ({"server": {"port": "99999"}}, "[server] port"),
        ({"database": {"url": "mysql://x/y"}}, "[database] url"),
        ({"storage": {"serve": "teleport"}}, "[storage] serve"),
        ({"cdn": {"files_url": "files.example.org"}}, "[cdn] files_url"),
    ],
)
def test_invalid_settings_name_the_key(tmp_path, sections, message):
    path = write_config(str(tmp_path / "c.ini"), sections)
    with pytest.raises(ConfigError) as info:
        load(path, environ={})
    assert message in str(info.value)


def test_masking():
    assert config_mod.masked("hunter2", "secret_access_key") == "***"
    assert config_mod.masked("postgresql://u:pw@h/db", "url") == "postgresql://u:***@h/db"
    assert config_mod.masked("/run/secrets/key", "key_file") == "/run/secrets/key"
    assert config_mod.masked("eu-west-1", "region") == "eu-west-1"


def test_check_config_masks_secrets(tmp_path):
    path = write_config(
        str(tmp_path / "c.ini"),
        {
            "server": {"data_dir": str(tmp_path / "data")},
            "database": {"url": "postgresql://app:s3cr3tpw@127.0.0.1:1/x"},
            "storage": {"backend": "local", "secret_access_key": "AKIAVERYSECRET"},
        },
    )
    r = cloudpypi("check-config", "--offline", config=path)
    assert r.returncode == 0
    assert "s3cr3tpw" not in r.stdout and "AKIAVERYSECRET" not in r.stdout
    assert "postgresql://app:***@127.0.0.1:1/x" in r.stdout


def test_check_config_invalid_value_exits_non_zero(tmp_path):
    path = write_config(str(tmp_path / "c.ini"), {"webui": {"max_upload_size": "huge"}})
    r = cloudpypi("check-config", config=path, check=False)
    assert r.returncode != 0
    assert "[webui] max_upload_size" in r.stderr


def test_check_config_unreachable_database(tmp_path):
    path = write_config(
        str(tmp_path / "c.ini"),
        {
            "server": {"data_dir": str(tmp_path / "data")},
            "database": {"url": "postgresql://app:pw@127.0.0.1:1/nothing"},
        },
    )
    r = cloudpypi("check-config", config=path, check=False)
    assert r.returncode != 0
    assert "[database] url" in r.stderr and "pw@" not in r.stderr


def test_check_config_unknown_backend(tmp_path):
    path = write_config(
        str(tmp_path / "c.ini"),
        {
            "server": {"data_dir": str(tmp_path / "data")},
            "storage": {"backend": "floppy"},
        },
    )
    r = cloudpypi("check-config", config=path, check=False)
    assert r.returncode != 0
    assert "floppy" in r.stderr and "local" in r.stderr and "s3" in r.stderr


def test_adduser_addrole_and_initdb(tmp_path):
    path = write_config(str(tmp_path / "c.ini"), {"server": {"data_dir": str(tmp_path / "data")}})
    assert "schema" in cloudpypi("initdb", config=path).stdout
    assert (
        cloudpypi("adduser", "carol", "--password-stdin", config=path, stdin="long enough pw\n").returncode
        == 0
    )
    dup = cloudpypi("adduser", "carol", "--password", "long enough pw", config=path, check=False)
    assert dup.returncode != 0 and "already taken" in dup.stderr
    short = cloudpypi("adduser", "dave", "--password", "short", config=path, check=False)
    assert short.returncode != 0 and "at least 8" in short.stderr
    r = cloudpypi("addrole", "Some.Project", "carol", "owner", config=path)
    assert "carol is now owner of Some.Project" in r.stdout
    missing = cloudpypi("addrole", "Some.Project", "nobody", "owner", config=path, check=False)
    assert missing.returncode != 0 and "no user named" in missing.stderr


def test_secret_names():
    assert config_mod.is_secret("secret_access_key") and config_mod.is_secret("key")
    assert config_mod.is_secret("fastly_api_token") and config_mod.is_secret("password")
    assert not config_mod.is_secret("surrogate_key_header")
    assert not config_mod.is_secret("key_file") and not config_mod.is_secret("secret_access_key_file")


def test_check_config_unknown_purger(tmp_path):
    path = write_config(str(tmp_path / "c.ini"), {"cdn": {"purge": "carrier-pigeon"}})
    r = cloudpypi("check-config", "--offline", config=path, check=False)
    assert r.returncode != 0
    assert "carrier-pigeon" in r.stderr and "varnish" in r.stderr
