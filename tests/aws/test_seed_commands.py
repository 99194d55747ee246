"""``condor_annex seed create | status | off`` on the moto server (issue 13 item 2): what is
refused before anything is made, how the seed is found, and what ``seed off`` ends.

The full boot (cloud-init, the pool, an annex grown from the seed) is tests/e2e/test_seed.py.
"""

from __future__ import annotations

import io
import json

import pytest

from condor_annex import __version__, config
from condor_annex.cli.main import main
from condor_annex.providers.aws import seed as ec2_seed
from condor_annex.providers.aws.session import make_client
from tests.conftest import MOTO_AMI


@pytest.fixture
def set_up(account, tmp_path, monkeypatch, capsys):
    """``condor_annex setup`` run as a user runs it (knobs recorded in the user config)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["setup"]) == 0
    capsys.readouterr()
    return config.read_knobs()


def _instances(aws) -> list[dict]:
    r = make_client(aws, "ec2").describe_instances(Filters=[
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return [i for res in r["Reservations"] for i in res["Instances"]]


def _launch_seed(aws, knobs) -> str:
    seed = config.seed_outputs(knobs)
    return ec2_seed.launch_seed(aws, image_id=MOTO_AMI, instance_type="m5.large",
                                user_data="#cloud-config\n",
                                instance_profile_arn=seed.instance_profile_arn,
                                security_group_ids=list(seed.security_group_ids),
                                version=__version__)


def _one_line_exit_2(argv, capsys) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (argv, code, out, err)
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_bad_input_and_a_region_without_setup_are_refused_before_anything_is_made(
        set_up, aws, capsys):
    err = _one_line_exit_2(["seed", "create", "--instance-type", "m5.large;rm"], capsys)
    assert "--instance-type" in err
    err = _one_line_exit_2(["seed", "create", "--instance-type", ""], capsys)
    assert "--instance-type" in err
    err = _one_line_exit_2(["seed", "create", "--region", "us-west-2"], capsys)
    assert "us-west-2" in err and "setup" in err
    err = _one_line_exit_2(["seed", "create", "--region", "mars-1"], capsys)
    assert "--region" in err
    # The seed installs with apt-get: an Amazon Linux seed would launch and then fail.
    err = _one_line_exit_2(["seed", "create", "--image", "al2023"], capsys)
    assert "--image" in err and "debian-13" in err
    assert _instances(aws) == []


def test_a_setup_without_the_seed_role_says_to_run_setup_again(set_up, aws, capsys):
    path = config.user_config_path()
    path.write_text("\n".join(line for line in path.read_text().splitlines()
                              if "ANNEX_SEED_" not in line) + "\n")
    err = _one_line_exit_2(["seed", "create"], capsys)
    assert "run 'condor_annex setup' again" in err
    assert _instances(aws) == []


def test_a_second_seed_is_refused_naming_the_first(set_up, aws, capsys):
    first = _launch_seed(aws, set_up)
    err = _one_line_exit_2(["seed", "create"], capsys)
    assert first in err and "seed off" in err
    assert [i["InstanceId"] for i in _instances(aws)] == [first]
    # It is on-demand and tagged as the seed, with setup's seed profile.
    [inst] = _instances(aws)
    assert "InstanceLifecycle" not in inst
    assert {"Key": ec2_seed.TAG_SEED, "Value": __version__} in inst["Tags"]
    assert inst["IamInstanceProfile"]["Arn"] == config.seed_outputs(set_up).instance_profile_arn


def test_status_lists_the_seed_and_off_ends_its_annexes_then_the_seed(set_up, aws, capsys):
    seed = _launch_seed(aws, set_up)
    role_arn = config.seed_outputs(set_up).role_arn
    # What a create on the seed leaves in EC2: instances owned by the seed role (the caller
    # ARN of its session reduced to the role, which carries no path); and a user's own annex.
    account_id = role_arn.split(":")[4]
    seed_owner = f"arn:aws:iam::{account_id}:role/{role_arn.rsplit('/', 1)[-1]}"
    ec2 = make_client(aws, "ec2")

    def annex_instance(name: str, owner: str) -> str:
        return ec2.run_instances(ImageId=MOTO_AMI, InstanceType="m5.large", MinCount=1,
                                 MaxCount=1, TagSpecifications=[{
                                     "ResourceType": "instance", "Tags": [
                                         {"Key": "htcondor:AnnexName", "Value": name},
                                         {"Key": "htcondor:AnnexOwner", "Value": owner}]}]
                                 )["Instances"][0]["InstanceId"]
    seeded = annex_instance("seeded", seed_owner)
    mine = annex_instance("mine", "arn:aws:iam::123456789012:user/alice")

    assert main(["seed", "status", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)["seeds"]
    assert row["instance_id"] == seed and row["annexes"] == ["seeded"]
    assert row["ready"] is False      # its console has not said so
    assert main(["seed", "status"]) == 0
    table = capsys.readouterr().out
    assert seed in table and "seeded" in table

    assert main(["seed", "off", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done == {"seed": seed, "annexes_ended": ["seeded"]}
    alive = {i["InstanceId"] for i in _instances(aws)}
    assert seeded not in alive and seed not in alive and mine in alive
    assert main(["seed", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["seeds"] == []
    # Nothing left to turn off: one line, exit 2.
    err = _one_line_exit_2(["seed", "off"], capsys)
    assert "no seed" in err
