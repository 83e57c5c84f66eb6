"""The purgers against real counterparts: a recording HTTP server for Fastly's API and
Varnish nodes, moto's server for CloudFront; and the factory."""

from __future__ import annotations

import sys
import uuid

import pytest

from cdn import purge
from cdn.purge import NullPurger, PurgeError, PurgerMisconfigured
from cdn.purgers.cloudfront import CloudFrontPurger
from cdn.purgers.fastly import FastlyPurger
from cdn.purgers.varnish import VarnishPurger

TOKEN = "s3cr3t-fastly-token"


# -- factory ------------------------------------------------------------------
def test_default_is_the_null_purger():
    purger = purge.from_config({})
    assert isinstance(purger, NullPurger)
    purger.purge(["index"], ["/simple/"])


def test_builtins_are_known_and_registered_as_entry_points():
    from importlib.metadata import entry_points

    assert {"none", "fastly", "cloudfront", "varnish"} <= set(purge.known_purgers())
    registered = {ep.name: ep.load() for ep in entry_points(group=purge.GROUP)}
    assert registered["varnish"] is VarnishPurger
    assert registered["none"] is NullPurger


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(
        PurgerMisconfigured, match=r"'akamai' is unknown; known purgers: .*cloudfront.*varnish"
    ):  # noqa: E501
        purge.from_config({"purge": "akamai"})


def test_missing_library_gives_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(PurgerMisconfigured, match=r"pip install 'cloudpypi\[s3\]'"):
        purge.from_config({"purge": "cloudfront", "cloudfront_distribution_id": "E1"})


def test_factory_builds_each_purger_from_its_keys(monkeypatch):
    monkeypatch.setenv("FASTLY_API_TOKEN", TOKEN)
    fastly = purge.from_config({"purge": "fastly", "fastly_service_id": "SVC"})
    assert isinstance(fastly, FastlyPurger) and fastly.soft and TOKEN not in fastly.describe()
    varnish = purge.from_config(
        {"purge": "varnish", "varnish_urls": "http://a:6081 http://b:6081/", "varnish_method": "ban"}
    )
    assert varnish.urls == ["http://a:6081/", "http://b:6081/"] and varnish.method == "ban"
    with pytest.raises(PurgerMisconfigured, match="varnish_urls"):
        purge.from_config({"purge": "varnish"})
    with pytest.raises(PurgerMisconfigured, match="varnish_method"):
        purge.from_config({"purge": "varnish", "varnish_urls": "http://a/", "varnish_method": "nuke"})
    with pytest.raises(PurgerMisconfigured, match="fastly_service_id"):
        purge.from_config({"purge": "fastly"})


# -- Fastly -------------------------------------------------------------------
def test_fastly_token_comes_from_the_environment_or_a_file(tmp_path):
    settings = {"fastly_service_id": "SVC"}
    assert FastlyPurger.from_config(settings, environ={"FASTLY_API_TOKEN": TOKEN})._token == TOKEN
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    from_file = FastlyPurger.from_config({**settings, "fastly_api_token_file": str(token_file)}, environ={})
    assert from_file._token == TOKEN
    with pytest.raises(PurgerMisconfigured, match="FASTLY_API_TOKEN") as info:
        FastlyPurger.from_config(settings, environ={})
    with pytest.raises(PurgerMisconfigured, match="cannot read"):
        FastlyPurger.from_config({**settings, "fastly_api_token_file": str(tmp_path / "nope")}, environ={})
    assert TOKEN not in str(info.value)


def test_fastly_soft_purges_one_key(recorder):
    FastlyPurger(service_id="SVC", api_token=TOKEN, api_url=recorder.url).purge(["project/demo"], ["/x"])
    [req] = recorder.requests
    assert (req.method, req.path) == ("POST", "/service/SVC/purge/project/demo")
    assert req.headers["fastly-key"] == TOKEN
    assert req.headers["fastly-soft-purge"] == "1"


def test_fastly_batches_several_keys_and_can_hard_purge(recorder):
    keys = [f"project/p{i}" for i in range(300)]
    FastlyPurger(service_id="SVC", api_token=TOKEN, api_url=recorder.url, soft=False).purge(keys, [])
    assert [r.path for r in recorder.requests] == ["/service/SVC/purge", "/service/SVC/purge"]
    assert recorder.requests[0].headers["surrogate-key"].split() == keys[:256]
    assert recorder.requests[1].headers["surrogate-key"].split() == keys[256:]
    assert all("fastly-soft-purge" not in r.headers for r in recorder.requests)


def test_fastly_error_is_a_purge_error_without_the_token(recorder):
    recorder.status = 401
    recorder.body = ('{"msg": "bad token ' + TOKEN + '"}').encode()
    with pytest.raises(PurgeError) as info:
        FastlyPurger(service_id="SVC", api_token=TOKEN, api_url=recorder.url).purge(["index"], [])
    assert "401" in str(info.value)
    assert TOKEN not in str(info.value)


def test_fastly_unreachable_is_a_purge_error():
    purger = FastlyPurger(service_id="SVC", api_token=TOKEN, api_url="http://127.0.0.1:9", timeout=2)
    with pytest.raises(PurgeError, match="failed"):
        purger.purge(["index"], [])


# -- Varnish (HTTP side; the real Varnish is in test_varnish_e2e.py) -----------
def test_varnish_purges_every_node_with_the_keys_in_xkey(recorder):
    VarnishPurger(urls=[recorder.url, recorder.url + "/"]).purge(["project/demo", "index"], ["/simple/"])
    assert [(r.method, r.path, r.headers["xkey"]) for r in recorder.requests] == [
        ("PURGE", "/", "project/demo index"),
        ("PURGE", "/", "project/demo index"),
    ]


def test_varnish_soft_purge_and_ban(recorder):
    VarnishPurger(urls=[recorder.url], soft=True).purge(["index"], [])
    VarnishPurger(urls=[recorder.url], method="ban").purge(["index"], [])
    assert recorder.requests[0].headers["xkey-softpurge"] == "index"
    assert (recorder.requests[1].method, recorder.requests[1].headers["xkey"]) == ("BAN", "index")


def test_varnish_fails_if_any_node_fails(recorder):
    purger = VarnishPurger(urls=[recorder.url, "http://127.0.0.1:9"], timeout=2)
    with pytest.raises(PurgeError, match="1 of 2 Varnish nodes failed"):
        purger.purge(["index"], [])
    assert len(recorder.requests) == 1  # the good node was purged all the same


# -- CloudFront on moto's server ------------------------------------------------
@pytest.fixture
def cloudfront(moto_s3):
    client = moto_s3.client(service="cloudfront")
    config = {
        "CallerReference": uuid.uuid4().hex,
        "Origins": {
            "Quantity": 1,
            "Items": [
                {
                    "Id": "app",
                    "DomainName": "pypi.example.org",
                    "CustomOriginConfig": {
                        "HTTPPort": 80,
                        "HTTPSPort": 443,
                        "OriginProtocolPolicy": "https-only",
                    },
                }
            ],
        },
        "DefaultCacheBehavior": {"TargetOriginId": "app", "ViewerProtocolPolicy": "allow-all", "MinTTL": 0},
        "Comment": "cloudpypi test",
        "Enabled": True,
    }
    distribution = client.create_distribution(DistributionConfig=config)["Distribution"]["Id"]
    yield client, distribution
    client.close()


def _invalidated(client, distribution) -> list[list[str]]:
    items = client.list_invalidations(DistributionId=distribution)["InvalidationList"].get("Items", [])
    batches = []
    for item in items:
        inv = client.get_invalidation(DistributionId=distribution, Id=item["Id"])["Invalidation"]
        batches.append(inv["InvalidationBatch"]["Paths"]["Items"])
    return batches


def test_cloudfront_invalidates_the_paths_in_batches(cloudfront):
    client, distribution = cloudfront
    paths = ["/simple/demo/", "/pypi/demo/json", "/pypi/demo/*", "/project/demo/*", "simple/"]
    CloudFrontPurger(client=client, distribution_id=distribution, batch_size=2).purge(["project/demo"], paths)
    batches = _invalidated(client, distribution)
    assert sorted(p for b in batches for p in b) == sorted([*paths[:4], "/simple/"])
    assert sorted(len(b) for b in batches) == [1, 2, 2]


def test_cloudfront_without_paths_sends_nothing(cloudfront):
    client, distribution = cloudfront
    CloudFrontPurger(client=client, distribution_id=distribution).purge(["index"], [])
    assert _invalidated(client, distribution) == []


def test_cloudfront_error_is_a_purge_error(cloudfront):
    client, _ = cloudfront
    with pytest.raises(PurgeError, match="ENOSUCH"):
        CloudFrontPurger(client=client, distribution_id="ENOSUCH").purge([], ["/simple/"])


def test_cloudfront_from_config_uses_the_endpoint(moto_s3, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    purger = purge.from_config(
        {
            "purge": "cloudfront",
            "cloudfront_distribution_id": "ENOSUCH",
            "cloudfront_endpoint_url": moto_s3.endpoint_url,
            "cloudfront_batch_size": "10",
        }
    )
    assert purger.batch_size == 10
    with pytest.raises(PurgeError, match="ENOSUCH"):
        purger.purge([], ["/simple/"])
    purger.close()
