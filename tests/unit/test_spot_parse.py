"""Spot annex input, without a cloud: the Spot Fleet config file, instance types and weights,
and the classic and modern flags.  Every bad input is one line naming the flag (exit 2)."""

from __future__ import annotations

import io
import json

import pytest

from condor_annex.cli import classic
from condor_annex.cli.main import build_parser, main
from condor_annex.errors import BadInputError
from condor_annex.model import (SPOT_API_EC2_FLEET, SPOT_API_SPOT_FLEET, SpotSpec,
                                parse_instance_types, parse_spot_fleet_config)

SPEC = {"InstanceType": "m5.large", "WeightedCapacity": 2}
GOOD = {"IamFleetRole": "arn:aws:iam::1:role/r", "LaunchSpecifications": [SPEC]}


# --- the Spot Fleet config ---------------------------------------------------------------------

def test_config_is_normalised_and_the_cli_wrapper_accepted():
    plain = parse_spot_fleet_config(json.dumps(GOOD))
    wrapped = parse_spot_fleet_config(json.dumps({"SpotFleetRequestConfig": GOOD}))
    assert plain == wrapped == json.dumps(GOOD, sort_keys=True, separators=(",", ":"))


BAD_CONFIGS = [
    ("{", "not valid JSON"),
    ("[1]", "the JSON must be an object"),
    ('{"LaunchSpecifications": []}', "LaunchSpecifications must be a non-empty list"),
    ('{"Bogus": 1, "LaunchSpecifications": [{"InstanceType": "m5.large"}]}',
     "unknown key(s) Bogus"),
    ('{"LaunchTemplateConfigs": [], "LaunchSpecifications": [{"InstanceType": "m5.large"}]}',
     "LaunchTemplateConfigs is not supported"),
    ('{"LaunchSpecifications": [1]}', "LaunchSpecifications[0] must be an object"),
    ('{"LaunchSpecifications": [{"ImageId": "ami-1"}]}', "LaunchSpecifications[0]: Instance"),
    ('{"LaunchSpecifications": [{"InstanceType": "m5.large", "Color": 1}]}',
     "LaunchSpecifications[0]: unknown key(s) Color"),
    ('{"LaunchSpecifications": [{"InstanceType": "m5.large", "WeightedCapacity": 0}]}',
     "WeightedCapacity must be a number above 0"),
    ('{"LaunchSpecifications": [{"InstanceType": "m5.large", "WeightedCapacity": "2"}]}',
     "WeightedCapacity must be a number above 0"),
    ('{"Type": "instant", "LaunchSpecifications": [{"InstanceType": "m5.large"}]}',
     "Type must be one of request, maintain"),
    ('{"AllocationStrategy": "cheapest", "LaunchSpecifications": [{"InstanceType": "m5.large"}]}',
     "AllocationStrategy must be one of"),
    ('{"IamFleetRole": 7, "LaunchSpecifications": [{"InstanceType": "m5.large"}]}',
     "IamFleetRole must be a string"),
]


@pytest.mark.parametrize("text, message", BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_bad_config_names_the_flag(text, message):
    with pytest.raises(BadInputError) as e:
        parse_spot_fleet_config(text, "-aws-spot-fleet-config-file")
    assert str(e.value).startswith("-aws-spot-fleet-config-file: ")
    assert message in str(e.value)


def test_fleet_role_comes_from_the_file_else_the_knob():
    with_role = SpotSpec(api=SPOT_API_SPOT_FLEET, spot_fleet_config=parse_spot_fleet_config(
        json.dumps(GOOD)), iam_fleet_role="arn:knob")
    without = SpotSpec(api=SPOT_API_SPOT_FLEET, spot_fleet_config=parse_spot_fleet_config(
        json.dumps({"LaunchSpecifications": [SPEC]})), iam_fleet_role="arn:knob")
    assert with_role.fleet_role_arn() == "arn:aws:iam::1:role/r"
    assert without.fleet_role_arn() == "arn:knob"


# --- instance types and weights ----------------------------------------------------------------

def test_instance_types_with_weights():
    assert parse_instance_types("m5.large, m5.xlarge:2,c5.2xlarge:4.5") == (
        ("m5.large", 1.0), ("m5.xlarge", 2.0), ("c5.2xlarge", 4.5))


@pytest.mark.parametrize("text, message", [
    ("", "give at least one instance type"),
    ("big", "'big' is not an instance type"),
    ("m5.large:0", "weight '0' of m5.large must be a number above 0"),
    ("m5.large:x", "weight 'x' of m5.large"),
    ("m5.large,m5.large:2", "m5.large is given twice"),
])
def test_bad_instance_types(text, message):
    with pytest.raises(BadInputError, match="^--instance-types: " + message.replace(".", r"\.")):
        parse_instance_types(text)


# --- classic flags -----------------------------------------------------------------------------

def plan(*argv: str) -> classic.Plan:
    return classic.make_plan(classic.parse_args(list(argv)))


def test_slots_plan_reads_and_checks_the_config(tmp_path):
    f = tmp_path / "sfr.json"
    f.write_text(json.dumps(GOOD))
    p = plan("-annex-name", "s1", "-slots", "4", "-aws-spot-fleet-config-file", str(f),
             "-duration", "0.5", "-tag", "team", "hep", "-aws-default-user-data", "dflt")
    assert p.mode == "create" and p.spec.count == 4 and p.spec.lease_seconds == 1800
    assert p.spot.api == SPOT_API_SPOT_FLEET
    assert json.loads(p.spot.spot_fleet_config) == GOOD
    assert p.spot.default_user_data == b"dflt" and p.spec.user_data is None
    assert p.spec.tags == (("team", "hep"),)


def test_slots_plan_without_a_file_defers_to_the_knob():
    p = plan("-annex-name", "s1", "-slots", "4", "-aws-user-data", "all")
    assert p.spot.spot_fleet_config == "" and p.spec.user_data == b"all"


def test_aws_spot_fleet_with_slots_and_prefixes(tmp_path):
    f = tmp_path / "sfr.json"
    f.write_text(json.dumps(GOOD))
    p = plan("-annex", "s1", "-aws-spot-fleet", "-sl", "2", "-aws-spot-fleet-c", str(f))
    assert p.spot is not None and p.spec.count == 2


def test_config_from_stdin(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(GOOD)))
    p = plan("-annex-name", "s1", "-slots", "1", "-aws-spot-fleet-config-file", "-", "-yes")
    assert json.loads(p.spot.spot_fleet_config) == GOOD


CLASSIC_BAD = [
    (["-annex-name", "a", "-slots", "x"], "-slots: 'x' is not a whole number"),
    (["-annex-name", "a", "-slots", "0"], "-slots: 0 is out of range"),
    (["-annex-name", "a", "-slots", "2", "-aws-on-demand"], "-slots: cannot be combined with "
                                                            "-aws-on-demand"),
    (["-annex-name", "a", "-aws-spot-fleet", "-duration", "1", "-count", "2"],
     "-count: a spot fleet's size"),
    (["-annex-name", "a", "-count", "2", "-aws-spot-fleet-config-file", "/f"],
     "-aws-spot-fleet-config-file: only for a spot fleet"),
    (["-annex-name", "a", "-slots", "2", "-aws-on-demand-instance-type", "m5.large"],
     "-aws-on-demand-instance-type: only for on-demand instances"),
    (["-annex-name", "a", "-slots", "2", "-aws-spot-fleet-config-file", "/nonexistent/f"],
     "-aws-spot-fleet-config-file: cannot read '/nonexistent/f'"),
    (["-annex-name", "a", "-slots", "2", "-aws-spot-fleet-config-file", "-"],
     "-aws-spot-fleet-config-file: reading the config from stdin leaves no answer"),
    (["-slots", "2"], "-annex-name: starting an annex needs a name, e.g. -annex-name my-annex "
                      "-slots 4"),
]


@pytest.mark.parametrize("argv, message", CLASSIC_BAD, ids=[" ".join(a)[:60] for a, _ in
                                                           CLASSIC_BAD])
def test_classic_bad_spot_input_is_one_line_and_exit_2(argv, message, user_config, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith("condor_annex: " + message), err


def test_malformed_config_file_is_exit_2_naming_the_flag(tmp_path, user_config, capsys):
    f = tmp_path / "sfr.json"
    f.write_text('{"LaunchSpecifications": [')
    assert main(["-annex-name", "a", "-slots", "2", "-aws-spot-fleet-config-file", str(f),
                 "-yes"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("condor_annex: -aws-spot-fleet-config-file: not valid JSON"), err


# --- modern flags ------------------------------------------------------------------------------

def _create_args(*argv: str):
    return build_parser().parse_args(["create", *argv])


def test_modern_spot_flags():
    from condor_annex.cli import annex
    args = _create_args("m1", "--spot", "--capacity", "4", "--instance-types",
                        "m5.large:2,c5.large:2", "--fleet-type", "request")
    spot = annex.spot_from_args(args)
    assert spot == SpotSpec(api=SPOT_API_EC2_FLEET, fleet_type="request",
                            instance_types=(("m5.large", 2.0), ("c5.large", 2.0)))
    assert annex.spec_from_args(args).count == 4


def test_modern_spot_defaults_to_the_instance_type():
    from condor_annex.cli import annex
    args = _create_args("m1", "--spot", "--capacity", "2", "--instance-type", "c5.large")
    assert annex.spot_from_args(args).instance_types == (("c5.large", 1.0),)
    assert annex.spot_from_args(args).fleet_type == "instant"


@pytest.mark.parametrize("argv, message", [
    (["m1", "--capacity", "4"], "--capacity: only with --spot"),
    (["m1", "--instance-types", "m5.large"], "--instance-types: only with --spot"),
    (["m1", "--count", "1", "--fleet-type", "maintain"], "--fleet-type: only with --spot"),
    (["m1", "--spot"], "--capacity: --spot needs the weighted capacity"),
    (["m1", "--spot", "--count", "2"], "--count: a Spot annex's size is its weighted capacity"),
    (["m1", "--spot", "--capacity", "2", "--instance-types", "x"], "--instance-types: 'x'"),
    (["m1"], "--count: give the number of instances"),
])
def test_modern_bad_spot_input(argv, message, user_config, capsys):
    assert main(["create", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("condor_annex: " + message), err
