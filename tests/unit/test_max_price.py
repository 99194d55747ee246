"""``create --spot --max-price USD`` (issue 12 item 5): what is accepted, what is refused (one
line naming the flag), and where it goes in the EC2 Fleet request (each override's
``MaxPrice``, a string of USD per unit-hour)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from condor_annex.errors import BadInputError
from condor_annex.max_price import parse_max_price
from condor_annex.model import FleetRequest, SpotSpec
from condor_annex.providers.aws.fleet import create_fleet_params


@pytest.mark.parametrize("text, expected", [("0.05", "0.05"), ("1", "1"), (".5", "0.5"),
                                            ("0.0011", "0.0011"), ("12.500", "12.5"),
                                            ("1000", "1000")])
def test_a_price_is_sent_as_ec2s_decimal_string(text, expected):
    assert parse_max_price(text) == expected


@pytest.mark.parametrize("text, words", [
    ("-0.05", "is negative"), ("0", "not more than $0.001"), ("0.001", "not more than $0.001"),
    ("nan", "not an amount"), ("inf", "not an amount"), ("abc", "not an amount"),
    ("1e3", "not an amount"), ("", "not an amount"), (" 1", "not an amount"),
    ("$1", "not an amount"), ("0.0000001", "not an amount"), ("1000.01", "more than $1000"),
])
def test_a_bad_price_is_one_line_naming_the_flag_and_an_example(text, words):
    with pytest.raises(BadInputError) as e:
        parse_max_price(text, "--max-price")
    line = str(e.value)
    assert line.startswith("--max-price: ") and words in line and "\n" not in line
    assert "e.g. --max-price 0.05" in line


def _request(spot: SpotSpec, subnets=()) -> FleetRequest:
    return FleetRequest("a1", "a1_tok", 2, datetime(2030, 1, 1, tzinfo=timezone.utc), "ami-1",
                        "arn:aws:iam::1:instance-profile/p", spot, subnet_ids=subnets)


def test_every_override_carries_the_max_price():
    spot = SpotSpec(instance_types=(("m5.large", 1.0), ("m5.xlarge", 2.0)), max_price="0.05")
    params = create_fleet_params(_request(spot, ("subnet-1", "subnet-2")), "lt-1", "1")
    overrides = params["LaunchTemplateConfigs"][0]["Overrides"]
    assert len(overrides) == 4 and {o["MaxPrice"] for o in overrides} == {"0.05"}


def test_without_a_max_price_no_override_has_one():
    spot = SpotSpec(instance_types=(("m5.large", 1.0),))
    overrides = create_fleet_params(_request(spot), "lt-1", "1")["LaunchTemplateConfigs"][0][
        "Overrides"]
    assert all("MaxPrice" not in o for o in overrides)
