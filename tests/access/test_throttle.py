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


def _app(tmp_path, db_url, **server):
    config = make_config(
        tmp_path,
        db_url,
        server=server,
        access={"login_burst": "3", "login_refill_seconds": "60", "login_user_delay": "0"},
    )
    database = Database(config.database.url)
    with database.transaction(write=True) as tx:
        auth.create_user(tx, "alice", PASSWORD)
    return webtest.TestApp(make_app(config, db=database)), database


def _fail(app, peer: str, forwarded: str | None = None, status: int = 401):
    headers = basic("alice", "guess")
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
        headers["Forwarded"] = f"for={forwarded.split(',')[0].strip()}"
    return app.get("/simple/", headers=headers, extra_environ=_from(peer), status=status)


@pytest.mark.parametrize("peer", ["198.51.100.7", "127.0.0.1"])
def test_a_forwarded_for_header_from_an_untrusted_peer_does_not_dodge_the_throttle(tmp_path, db_url, peer):
    # No trusted proxies (the default), not even 127.0.0.1: each failure claims another client.
    app, database = _app(tmp_path, db_url)
    try:
        for i in range(3):
            _fail(app, peer, f"203.0.113.{i}")
        _fail(app, peer, "203.0.113.99", status=429)
        _fail(app, peer, status=429)
    finally:
        database.close()


def test_behind_a_trusted_proxy_each_client_has_its_own_bucket(tmp_path, db_url):
    app, database = _app(tmp_path, db_url, trusted_proxies="10.0.0.0/8, 192.0.2.1")
    try:
        # Through two trusted proxies (the CDN edge 10.1.2.3, then 192.0.2.1, the peer).
        for _ in range(3):
            _fail(app, "192.0.2.1", "203.0.113.5, 10.1.2.3")
        _fail(app, "192.0.2.1", "203.0.113.5, 10.1.2.3", status=429)
        # A client that writes its own X-Forwarded-For gets the address the proxy saw, not its claim.
        _fail(app, "192.0.2.1", "203.0.113.77, 203.0.113.5", status=429)
        _fail(app, "192.0.2.1", "garbage, 203.0.113.5", status=429)
        # Another client behind the same proxy is not locked out by the first one's failures.
        app.get(
            "/simple/",
            headers={**basic("alice", PASSWORD), "X-Forwarded-For": "203.0.113.6"},
            extra_environ=_from("192.0.2.1"),
            status=200,
        )
        # A peer outside the trusted ones is its own client, whatever it forwards.
        for _ in range(3):
            _fail(app, "198.51.100.7", "203.0.113.6")
        _fail(app, "198.51.100.7", "203.0.113.8", status=429)
        app.get(
            "/simple/",
            headers={**basic("alice", PASSWORD), "X-Forwarded-For": "203.0.113.6"},
            extra_environ=_from("192.0.2.1"),
            status=200,
        )
    finally:
        database.close()
