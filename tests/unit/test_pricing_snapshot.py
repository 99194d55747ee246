"""The price snapshot shipped in the package, and the Price List answer's parsing
(:mod:`condor_annex.providers.aws.pricing`)."""

from __future__ import annotations

import fnmatch
import json
import math
import pathlib
import tomllib

import pytest

from condor_annex.providers.aws import pricing

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT / "src" / "condor_annex" / "providers" / "aws" / "data"

#: One PriceList entry as AWS's GetProducts returns it (a JSON string; trimmed to the parts the
#: API reference's example and the EC2 offer file define), with a zero-priced free-tier range
#: beside the real one, as some products have.
ENTRY = json.dumps({
    "product": {"productFamily": "Compute Instance", "sku": "JF25X344J7WKTCS6",
                "attributes": {"instanceType": "m5.large", "regionCode": "us-east-1",
                               "operatingSystem": "Linux", "tenancy": "Shared"}},
    "serviceCode": "AmazonEC2",
    "terms": {
        "OnDemand": {"JF25X344J7WKTCS6.JRTCKXETXF": {"priceDimensions": {
            "JF25X344J7WKTCS6.JRTCKXETXF.6YS6EN2CT7": {
                "unit": "Hrs", "beginRange": "0", "endRange": "Inf",
                "pricePerUnit": {"USD": "0.0960000000"}},
            "JF25X344J7WKTCS6.JRTCKXETXF.FREE": {
                "unit": "Hrs", "beginRange": "0", "endRange": "750",
                "pricePerUnit": {"USD": "0.0000000000"}}}}},
        "Reserved": {"JF25X344J7WKTCS6.38NPMPTW36": {"priceDimensions": {
            "x": {"unit": "Hrs", "pricePerUnit": {"USD": "0.0600000000"}}}}}},
})


def test_parse_takes_on_demand_usd_and_skips_reserved_and_free_ranges():
    assert pricing.parse_on_demand([ENTRY]) == [(0.096, "Hrs")]
    assert pricing.parse_on_demand([]) == []
    with pytest.raises(ValueError):
        pricing.parse_on_demand(["not json"])
    for bad in ("-0.1", "nan", "inf", "x"):
        with pytest.raises(ValueError):
            pricing.parse_on_demand([ENTRY.replace("0.0960000000", bad)])


def test_price_list_endpoint_region():
    assert pricing.price_list_region("eu-central-1") == "eu-central-1"
    assert pricing.price_list_region("ap-south-1") == "ap-south-1"
    assert pricing.price_list_region("eu-west-1") == "us-east-1"


def test_snapshot_is_package_data_with_its_date_and_sane_prices():
    snap = pricing.PriceSource(None).snapshot()   # type: ignore[arg-type] - no API used
    assert pricing.SNAPSHOT_FILE == f"prices-{snap['as_of']}.json"
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]["condor_annex"]
    shipped = f"providers/aws/data/{pricing.SNAPSHOT_FILE}"
    assert (DATA / pricing.SNAPSHOT_FILE).is_file()
    assert any(fnmatch.fnmatch(shipped, p) for p in patterns), "not shipped in the wheel"
    assert 0 < snap["public_ipv4_usd_per_hour"] < 1
    assert "us-east-1" in snap["regions"]
    for region, prices in snap["regions"].items():
        assert 0 < prices["ebs_gp3_usd_per_gb_month"] < 1, region
        assert prices["on_demand_usd_per_hour"], region
        for itype, usd in prices["on_demand_usd_per_hour"].items():
            assert isinstance(usd, float) and math.isfinite(usd) and 0 < usd < 100, itype
    # The default instance type of a create has a snapshot price in the default region.
    from condor_annex.model import DEFAULT_INSTANCE_TYPE
    assert DEFAULT_INSTANCE_TYPE in snap["regions"]["us-east-1"]["on_demand_usd_per_hour"]


def test_price_to_json_round_trips():
    price = pricing.Price(0.1, "hour", "snapshot", "2026-11-30", az="us-east-1a")
    assert pricing.Price(**price.to_json()) == price
