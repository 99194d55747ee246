"""Prices (issue 12 item 4's price source, :mod:`condor_annex.providers.aws.pricing`) against the
moto server behind the gateway, whose strict rule (:mod:`condor_annex.providers.local.
strict_pricing`) answers the Price List Query API and DescribeSpotPriceHistory in AWS's shapes:
answers parsed, the day's cache used the second time (no call), the shipped snapshot (with its
date) when an API fails, and an unknown instance type refused by name, never priced at zero."""

from __future__ import annotations

import dataclasses
import json
from datetime import date, datetime, timedelta, timezone

import pytest

from condor_annex.errors import BadInputError
from condor_annex.providers.aws.pricing import (SNAPSHOT_FILE, SPOT_STAND_IN, NoPriceError,
                                                PriceSource)
from condor_annex.providers.aws.provider import AwsProvider
from condor_annex.providers.aws.session import make_client
from condor_annex.providers.local.strict_pricing import Prices

SNAPSHOT_DATE = SNAPSHOT_FILE[len("prices-"):-len(".json")]


@pytest.fixture
def cloud(aws, gateway):
    """(settings through the gateway, the gateway's price table, the gateway)."""
    settings = dataclasses.replace(aws, endpoint_url=gateway.url)
    table = gateway.rule(Prices)
    assert table is not None
    return settings, table, gateway


def test_on_demand_price_is_the_linux_shared_product_of_the_region(cloud):
    settings, table, gw = cloud
    table.set_on_demand("m5.large", 0.1234)
    price = PriceSource(settings).on_demand_usd_per_hour("us-east-1", "m5.large")
    # The table also holds RHEL, Windows, SQL Server, Dedicated and capacity-reservation rows
    # of m5.large, all dearer: a missing filter would have picked one of them.
    assert (price.usd, price.unit, price.source, price.cached) == \
        (0.1234, "hour", "price-list", False)
    assert price.as_of == datetime.now(timezone.utc).date().isoformat()
    assert gw.count("pricing.GetProducts") == 1


def test_a_region_without_a_price_list_endpoint_is_asked_through_us_east_1(cloud):
    settings, table, gw = cloud
    far = dataclasses.replace(settings, region="eu-west-1")
    price = PriceSource(far).on_demand_usd_per_hour("eu-west-1", "c5.large")
    assert (price.usd, price.source) == (0.085, "price-list")
    # Signed for eu-west-1 the endpoint does not exist (the local cloud refuses it as AWS's DNS
    # would): the product never sends it there.
    assert gw.outcomes("pricing.GetProducts") == ["answered"]
    with pytest.raises(Exception, match="no Price List Query API endpoint"):
        make_client(far, "pricing").get_products(ServiceCode="AmazonEC2")


def test_second_lookup_of_the_day_is_answered_by_the_cache(cloud, user_config):
    settings, table, gw = cloud
    src = PriceSource(settings)
    first = src.on_demand_usd_per_hour("us-east-1", "m4.large")
    table.set_on_demand("m4.large", 9.99)   # AWS changed its price: the day's answer stands
    again = PriceSource(settings).on_demand_usd_per_hour("us-east-1", "m4.large")
    assert gw.count("pricing.GetProducts") == 1
    assert (again.usd, again.source, again.cached) == (first.usd, "price-list", True)
    day_file = user_config.parent / "cache" / f"prices-us-east-1-{first.as_of}.json"
    assert json.loads(day_file.read_text())["on_demand"]["m4.large"]["usd"] == 0.10
    # The next UTC day asks again.
    tomorrow = date.fromisoformat(first.as_of) + timedelta(days=1)
    later = PriceSource(settings, today=lambda: tomorrow).on_demand_usd_per_hour(
        "us-east-1", "m4.large")
    assert (later.usd, later.as_of, later.cached) == (9.99, tomorrow.isoformat(), False)
    assert gw.count("pricing.GetProducts") == 2


def test_earlier_days_files_are_removed_and_a_foreign_file_is_asked_again(cloud):
    settings, table, gw = cloud
    src = PriceSource(settings)
    src.cache_dir.mkdir(parents=True)
    old = src.cache_dir / "prices-us-east-1-2020-01-01.json"
    old.write_text("{}")
    other_region = src.cache_dir / "prices-us-west-2-2020-01-01.json"
    other_region.write_text("{}")
    today = src.cache_path("us-east-1")
    today.write_text(json.dumps({"on_demand": {"m5.large": {"usd": 1, "dollars": 2}}}))
    price = src.on_demand_usd_per_hour("us-east-1", "m5.large")
    assert (price.usd, price.cached, gw.count("pricing.GetProducts")) == (0.096, False, 1)
    assert not old.exists() and other_region.exists()
    assert PriceSource(settings).on_demand_usd_per_hour("us-east-1", "m5.large").cached


def test_a_malformed_answer_is_not_taken(cloud):
    settings, table, gw = cloud
    table.set_on_demand("m5.large", float("nan"))
    price = PriceSource(settings).on_demand_usd_per_hour("us-east-1", "m5.large")
    assert (price.usd, price.source) == (0.096, "snapshot")


def test_cache_is_per_region(cloud):
    settings, table, gw = cloud
    src = PriceSource(settings)
    src.on_demand_usd_per_hour("us-east-1", "m5.large")
    src.on_demand_usd_per_hour("us-west-2", "m5.large")
    src.on_demand_usd_per_hour("us-west-2", "m5.large")
    assert gw.count("pricing.GetProducts") == 2
    assert src.cache_path("us-west-2").exists() and src.cache_path("us-east-1").exists()


@pytest.mark.parametrize("fault", ["denied", "unavailable"])
def test_snapshot_with_its_date_when_the_price_list_fails(cloud, fault):
    settings, table, gw = cloud
    table.set_on_demand("m5.large", 0.5)
    if fault == "denied":   # no pricing:GetProducts in the caller's policy
        gw.fail("pricing.GetProducts", "AccessDeniedException", times=None)
    else:
        gw.server_error("pricing.GetProducts", status=503)
    src = PriceSource(settings)
    price = src.on_demand_usd_per_hour("us-east-1", "m5.large")
    assert (price.usd, price.source, price.as_of) == (0.096, "snapshot", SNAPSHOT_DATE)
    gp3 = src.ebs_gp3_usd_per_gb_month("us-east-1")
    assert (gp3.usd, gp3.unit, gp3.source, gp3.as_of) == (0.08, "GB-month", "snapshot",
                                                         SNAPSHOT_DATE)
    # A fallback is not cached: once the API answers again, its price is used.
    gw.clear()
    back = src.on_demand_usd_per_hour("us-east-1", "m5.large")
    assert (back.usd, back.source) == (0.5, "price-list")


def test_unknown_instance_type_is_refused_by_name_never_zero(cloud):
    settings, table, gw = cloud
    src = PriceSource(settings)
    with pytest.raises(NoPriceError, match=r"'m5\.lrage'") as err:
        src.on_demand_usd_per_hour("us-east-1", "m5.lrage")
    assert isinstance(err.value, BadInputError) and "\n" not in str(err.value)
    assert err.value.instance_type == "m5.lrage"
    with pytest.raises(NoPriceError, match=r"spot price known for instance type 'm5\.lrage'"):
        src.spot_usd_per_hour("us-east-1", "m5.lrage")
    assert not src.cache_path("us-east-1").exists()   # nothing cached for a refusal
    # The API down and the snapshot without the type: refused too, saying both.
    table.set_on_demand("x9.huge", 3.0)
    gw.fail("pricing.GetProducts", "ThrottlingException", times=None)
    with pytest.raises(NoPriceError, match=r"'x9\.huge'.*could not be asked.*snapshot"):
        src.on_demand_usd_per_hour("us-east-1", "x9.huge")


def test_spot_prices_are_the_newest_per_zone(cloud):
    settings, table, gw = cloud
    src = PriceSource(settings)
    # The default history has an older, dearer entry per zone before the current one.
    zones = src.spot_prices("us-east-1", "m4.large")
    assert {az: p.usd for az, p in zones.items()} == \
        {"us-east-1a": 0.031, "us-east-1b": 0.034, "us-east-1c": 0.029}
    assert all(p.source == "spot-price-history" and p.az == az for az, p in zones.items())
    low = src.spot_usd_per_hour("us-east-1", "m4.large")
    assert (low.usd, low.az, low.cached) == (0.029, "us-east-1c", True)
    assert src.spot_usd_per_hour("us-east-1", "m4.large", "us-east-1b").usd == 0.034
    assert gw.count("ec2.DescribeSpotPriceHistory") == 1
    with pytest.raises(NoPriceError, match="us-east-1f"):
        src.spot_usd_per_hour("us-east-1", "m4.large", "us-east-1f")


def test_spot_price_is_the_last_change_in_each_zone(cloud):
    settings, table, gw = cloud
    table.set_spot("us-east-1", "c5.large", {"us-east-1a": 0.05, "us-east-1d": 0.04})
    table.set_spot("us-east-1", "c5.large", {"us-east-1a": 0.03})
    got = PriceSource(settings).spot_prices("us-east-1", "c5.large")
    assert {az: p.usd for az, p in got.items()} == {"us-east-1a": 0.03, "us-east-1d": 0.04}


def test_spot_falls_back_to_the_on_demand_price_when_ec2_fails(cloud):
    settings, table, gw = cloud
    gw.fail("ec2.DescribeSpotPriceHistory", "UnauthorizedOperation", times=None)
    price = PriceSource(settings).spot_usd_per_hour("us-east-1", "m5.large")
    assert (price.usd, price.source, price.note) == (0.096, "price-list", SPOT_STAND_IN)
    gw.clear()
    assert PriceSource(settings).spot_usd_per_hour("us-east-1", "m5.large").source == \
        "spot-price-history"


def test_gp3_storage_and_public_ipv4(cloud):
    settings, table, gw = cloud
    table.set_gp3(0.0912)   # gp3's IOPS and throughput products are in the table too
    src = PriceSource(settings)
    gp3 = src.ebs_gp3_usd_per_gb_month("us-east-1")
    assert (gp3.usd, gp3.unit, gp3.source) == (0.0912, "GB-month", "price-list")
    assert src.ebs_gp3_usd_per_gb_month("us-east-1").cached
    ip = src.public_ipv4_usd_per_hour("us-east-1")
    assert (ip.usd, ip.unit, ip.source, ip.as_of) == (0.005, "hour", "snapshot", SNAPSHOT_DATE)


def test_provider_contract_prices_in_its_region(cloud):
    settings, table, gw = cloud
    table.set_on_demand("m5.xlarge", 0.2)
    provider = AwsProvider(settings)
    assert provider.on_demand_price("m5.xlarge").usd == 0.2
    assert provider.spot_price("m5.xlarge").usd == pytest.approx(0.2 * 0.29)
    assert provider.volume_price().usd == 0.08
    assert provider.public_ip_price().usd == 0.005


def test_moto_constant_spot_price_is_not_what_the_local_cloud_answers(cloud):
    settings, table, gw = cloud
    ec2 = make_client(settings, "ec2")
    items = ec2.describe_spot_price_history(InstanceTypes=["m4.large"],
                                            ProductDescriptions=["Linux/UNIX"])
    prices = {i["SpotPrice"] for i in items["SpotPriceHistory"]}
    assert prices and "0.00001" not in prices
    assert gw.outcomes("ec2.DescribeSpotPriceHistory") == ["answered"]


def test_every_price_call_is_allowed_by_the_shipped_policy(cloud):
    from condor_annex.providers.aws import policy as shipped
    from condor_annex.providers.aws.session import add_call_listener, remove_call_listener
    from tests.aws.test_policy import allowed, iam_action
    settings, table, gw = cloud
    seen: list[str] = []
    add_call_listener(seen.append)
    try:
        src = PriceSource(settings)
        src.on_demand_usd_per_hour("us-east-1", "m5.large")
        src.spot_prices("us-east-1", "m5.large")
        src.ebs_gp3_usd_per_gb_month("us-east-1")
    finally:
        remove_call_listener(seen.append)
    assert sorted(set(seen)) == ["ec2.DescribeSpotPriceHistory", "pricing.GetProducts"]
    document = shipped.load()
    assert [c for c in set(seen) if not allowed(iam_action(c), document)] == []
