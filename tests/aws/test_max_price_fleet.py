"""``create --spot --max-price`` against the moto server: the EC2 Fleet's overrides carry it
as EC2 keeps them, the annex's recorded Spot settings keep it (for replacements), and bad
input creates nothing."""

from __future__ import annotations

import pytest

from condor_annex.providers.aws.session import make_client
from condor_annex.state.store import Store, default_path
from tests.aws.test_create_safety import cloud, run  # noqa: F401 - the fixture

__all__ = ["cloud"]


def test_the_fleet_is_requested_with_the_max_price_on_each_override(cloud, capsys):
    code, _out, err = run(["create", "capped", "--spot", "--capacity", "2", "--instance-types",
                           "m5.large,m5.xlarge:2", "--max-price", "0.05"], capsys)
    assert code == 0, err
    ec2 = make_client(cloud.aws, "ec2")
    fleets = [f for f in ec2.describe_fleets()["Fleets"]
              if {"Key": "htcondor:AnnexName", "Value": "capped"} in f.get("Tags", [])]
    (fleet,) = fleets
    overrides = fleet["LaunchTemplateConfigs"][0]["Overrides"]
    assert [o["InstanceType"] for o in overrides] == ["m5.large", "m5.xlarge"]
    assert {o["MaxPrice"] for o in overrides} == {"0.05"}
    with Store(default_path({})) as store:
        assert store.annex("capped").spec["spot"]["max_price"] == "0.05"


@pytest.mark.parametrize("argv", [
    ["--spot", "--capacity", "2", "--max-price", "-1"],
    ["--spot", "--capacity", "2", "--max-price", "0"],
    ["--spot", "--capacity", "2", "--max-price", "nan"],
    ["--spot", "--capacity", "2", "--max-price", "cheap"],
    ["--count", "2", "--max-price", "0.05"],          # not a Spot annex
])
def test_bad_max_price_is_one_line_exit_2_and_nothing_is_created(cloud, capsys, argv):
    code, out, err = run(["create", "nope", *argv], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and "--max-price" in err, err
    assert cloud.instances("nope") == {} and "nope" not in cloud.leases()
