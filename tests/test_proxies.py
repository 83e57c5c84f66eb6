"""``[server] trusted_proxies``: forwarding headers are believed from those peers only (none by
default), and the client is the rightmost X-Forwarded-For entry that is not a trusted proxy."""

from __future__ import annotations

import pytest

from pypi.config import ConfigError, build
from pypi.proxies import PROXY_ADDR, TrustedProxies
from pypi.server.application import gunicorn_settings

FORWARDING = {
    "HTTP_X_FORWARDED_FOR": "203.0.113.9",
    "HTTP_X_FORWARDED_PROTO": "https",
    "HTTP_X_FORWARDED_HOST": "evil.example",
    "HTTP_FORWARDED": "for=203.0.113.9;proto=https",
}


def _environ(peer: str) -> dict:
    return {"REMOTE_ADDR": peer, "HTTP_ACCEPT": "text/html", **FORWARDING}


@pytest.mark.parametrize("peer", ["127.0.0.1", "::1", "198.51.100.1", ""])
def test_by_default_no_peer_is_trusted_and_forwarding_headers_are_removed(peer):
    environ = _environ(peer)
    TrustedProxies().apply(environ)
    assert environ == {"REMOTE_ADDR": peer, "HTTP_ACCEPT": "text/html"}


def test_a_trusted_proxy_names_the_client_and_keeps_its_headers():
    environ = _environ("10.0.0.5")
    TrustedProxies(["10.0.0.0/8"]).apply(environ)
    assert environ["REMOTE_ADDR"] == "203.0.113.9"
    assert environ[PROXY_ADDR] == "10.0.0.5"
    assert environ["HTTP_X_FORWARDED_PROTO"] == "https"


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        (None, "10.0.0.5"),
        ("", "10.0.0.5"),
        ("203.0.113.9", "203.0.113.9"),
        ("1.1.1.1, 203.0.113.9", "203.0.113.9"),  # the client's own claim, left of what the proxy saw
        ("203.0.113.9, 10.9.9.9", "203.0.113.9"),  # through two trusted proxies
        ("203.0.113.9:4711", "203.0.113.9"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("203.0.113.9, unknown", "10.0.0.5"),  # a hop no proxy wrote: trust stops at the peer
        ("10.1.1.1, 10.2.2.2", "10.1.1.1"),  # only trusted proxies: the farthest one
    ],
)
def test_the_client_is_the_rightmost_untrusted_forwarded_address(forwarded_for, client):
    assert TrustedProxies(["10.0.0.0/8"]).client("10.0.0.5", forwarded_for) == client


def test_an_untrusted_peer_is_the_client_whatever_it_forwards():
    assert TrustedProxies(["10.0.0.0/8"]).client("198.51.100.1", "10.0.0.1") == "198.51.100.1"


def test_the_setting_is_read_checked_and_given_to_gunicorn(tmp_path):
    default = build({}, base_dir=str(tmp_path))
    assert default.server.trusted_proxies == ()
    assert gunicorn_settings(default)["forwarded_allow_ips"] == ""  # not gunicorn's 127.0.0.1
    config = build(
        {"server": {"trusted_proxies": "10.0.0.1/8, 192.0.2.1 2001:db8::/32"}}, base_dir=str(tmp_path)
    )
    assert config.server.trusted_proxies == ("10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32")
    assert gunicorn_settings(config)["forwarded_allow_ips"] == "10.0.0.0/8,192.0.2.1/32,2001:db8::/32"
    with pytest.raises(ConfigError, match=r"\[server\] trusted_proxies: 'cdn.example' is not an IP"):
        build({"server": {"trusted_proxies": "cdn.example"}}, base_dir=str(tmp_path))
