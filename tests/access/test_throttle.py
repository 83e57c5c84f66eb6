"""Failed logins are throttled: per client address (429 + Retry-After once the burst is
spent), per username (each further check delayed, never refused), on reads and uploads."""

from __future__ import annotations

import time

import pytest
import webtest

from pypi.app import make_app
from pypi.index import auth
from pypi.index.db import Database
from pypi.index.throttle import Buckets
from tests.conftest import PASSWORD, basic, make_config


@pytest.fixture
def db_url(tmp_path):
    url = f"sqlite:///{tmp_path}/t.sqlite3"
    database = Database(url)
    database.migrate()
    database.close()
    return url


@pytest.fixture
def throttled(tmp_path, db_url):
    config = make_config(
        tmp_path,
        db_url,
        access={
            "login_burst": "3",
            "login_refill_seconds": "60",
            "login_user_burst": "2",
            "login_user_delay": "0.3",
        },
    )
    database = Database(config.database.url)
    with database.transaction(write=True) as tx:
        auth.create_user(tx, "alice", PASSWORD)
    yield webtest.TestApp(make_app(config, db=database))
    database.close()


def _from(address: str) -> dict:
    return {"REMOTE_ADDR": address}


def test_an_address_that_keeps_failing_gets_429_and_others_are_unaffected(throttled):
    for _ in range(3):
        throttled.get(
            "/simple/", headers=basic("alice", "guess"), extra_environ=_from("10.0.0.1"), status=401
        )
    r = throttled.get(
        "/simple/", headers=basic("alice", PASSWORD), extra_environ=_from("10.0.0.1"), status=429
    )
    assert int(r.headers["Retry-After"]) >= 1 and "too many failed logins" in r.text
    assert r.headers["Cache-Control"] == "private, no-store"
    # Uploads are throttled alike (the body is never looked at).
    r = throttled.post(
        "/legacy/",
        {":action": "file_upload"},
        headers=basic("alice", "guess"),
        extra_environ=_from("10.0.0.1"),
        status=429,
    )
    # The real user, from their own address, still logs in (the per-user bucket only delays).
    throttled.get("/simple/", headers=basic("alice", PASSWORD), extra_environ=_from("10.0.0.2"), status=200)
    # Anonymous reads from the throttled address are not affected.
    throttled.get("/simple/", extra_environ=_from("10.0.0.1"), status=200)


def test_a_username_under_attack_is_delayed_not_locked_out(throttled):
    for i in range(2):
        throttled.get(
            "/simple/", headers=basic("alice", "guess"), extra_environ=_from(f"10.1.0.{i}"), status=401
        )
    started = time.monotonic()
    throttled.get("/simple/", headers=basic("alice", "guess"), extra_environ=_from("10.1.0.9"), status=401)
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    throttled.get("/simple/", headers=basic("alice", PASSWORD), extra_environ=_from("10.1.0.10"), status=200)
    assert time.monotonic() - started >= 0.3  # delayed, but it works


def test_buckets_refill():
    b = Buckets(2, 0.05)
    b.take("k")
    b.take("k")
    assert b.wait("k") > 0
    time.sleep(0.06)
    assert b.wait("k") == 0


def test_access_settings_are_checked(tmp_path, db_url):
    from pypi.config import ConfigError

    with pytest.raises(ConfigError, match=r"\[access\] read: 'everyone' must be public or authenticated"):
        make_config(tmp_path, db_url, access={"read": "everyone"})
    with pytest.raises(ConfigError, match=r"\[access\] signed_url_expires"):
        make_config(tmp_path, db_url, access={"signed_url_expires": "0"})
    with pytest.raises(ConfigError, match=r"signing_key_id and signing_key_file must be set together"):
        make_config(tmp_path, db_url, cdn={"signing_key_id": "K"})
    with pytest.raises(ConfigError, match=r"\[cdn\] signing_key_file"):
        make_config(tmp_path, db_url, cdn={"signing_key_id": "K", "signing_key_file": "missing.pem"})
