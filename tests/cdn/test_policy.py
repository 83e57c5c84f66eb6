"""The cache policy table: every kind's headers, by default and configured."""

from __future__ import annotations

import pytest

from cdn import policy
from cdn.policy import CachePolicy

SURROGATE = "max-age=86400, stale-while-revalidate=300, stale-if-error=86400"

DEFAULTS = {
    policy.FILE: [("Cache-Control", "max-age=365000000, immutable, public")],
    policy.INDEX: [
        ("Cache-Control", "max-age=600, public"),
        ("Surrogate-Control", SURROGATE),
        ("Surrogate-Key", "project/demo index"),
    ],
    policy.HTML: [
        ("Cache-Control", "max-age=60, public"),
        ("Surrogate-Control", SURROGATE),
        ("Surrogate-Key", "project/demo index"),
    ],
    policy.MISSING: [
        ("Cache-Control", "max-age=60, public"),
        ("Surrogate-Control", "max-age=60"),
        ("Surrogate-Key", "project/demo index"),
    ],
    policy.PRIVATE: [("Cache-Control", "private, no-store")],
}


@pytest.mark.parametrize("kind", policy.KINDS)
def test_every_kind_has_its_default_headers(kind):
    assert CachePolicy.from_config({}).headers(kind, ["project/demo", "index"]) == DEFAULTS[kind]


def test_keys_are_deduplicated_and_empty_ones_dropped():
    headers = dict(CachePolicy.from_config({}).headers(policy.INDEX, ["a", "", "b", "a"]))
    assert headers["Surrogate-Key"] == "a b"
    assert "Surrogate-Key" not in dict(CachePolicy.from_config({}).headers(policy.INDEX, []))


def test_values_and_key_header_are_configurable():
    settings = {
        "files_max_age": "31536000",
        "index_max_age": "30",
        "html_max_age": "5",
        "missing_max_age": "2",
        "surrogate_max_age": "3600",
        "stale_while_revalidate": "0",
        "stale_if_error": "60",
        "surrogate_key_header": "Cache-Tag",
    }
    p = CachePolicy.from_config(settings)
    assert p.headers(policy.FILE) == [("Cache-Control", "max-age=31536000, immutable, public")]
    assert p.headers(policy.INDEX, ["k"]) == [
        ("Cache-Control", "max-age=30, public"),
        ("Surrogate-Control", "max-age=3600, stale-while-revalidate=0, stale-if-error=60"),
        ("Cache-Tag", "k"),
    ]
    assert dict(p.headers(policy.HTML))["Cache-Control"] == "max-age=5, public"
    assert dict(p.headers(policy.MISSING))["Surrogate-Control"] == "max-age=2"
    assert p.headers(policy.PRIVATE, ["k"]) == [("Cache-Control", "private, no-store")]


@pytest.mark.parametrize("value", ["soon", "-1", "1.5"])
def test_bad_value_names_the_key(value):
    with pytest.raises(ValueError, match="index_max_age"):
        CachePolicy.from_config({"index_max_age": value})
