"""The AWS rules for fleets and instance profiles that the gateway adds to moto
(:mod:`condor_annex.providers.local.strict_fleets`, :mod:`.strict_profiles`), proved with real
boto3 clients against the gateway in front of the moto server.  Each test fails on moto alone:
moto never expires a fleet, ignores an unknown ``ValidUntil`` on ModifyFleet, accepts any
``IamFleetRole`` and ``ExcessCapacityTerminationPolicy`` on any fleet type, and knows a new
instance profile at once."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from condor_annex.providers.local.strict_fleets import FleetRules

AMI = "ami-03cf127a"     # an image moto knows
ONE_TRY = Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30)
TRUST_SPOTFLEET = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "spotfleet.amazonaws.com"},
    "Action": "sts:AssumeRole"}]})
TRUST_EC2 = TRUST_SPOTFLEET.replace("spotfleet", "ec2")


def client(service: str, url: str):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", config=ONE_TRY)


class FakeClock:
    """A gateway clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def gw(gateway, moto_endpoint):
    """The (strict) gateway in front of a freshly reset moto, on a clock the test moves."""
    urllib.request.urlopen(urllib.request.Request(gateway.url + "/moto-api/reset",
                                                  method="POST"), timeout=10).read()
    gateway.clock = FakeClock()
    return gateway


def later(seconds: float) -> datetime:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).replace(microsecond=0)


def template(ec2, name: str = "tmpl", profile: dict | None = None) -> str:
    data = {"ImageId": AMI, "InstanceType": "t3.micro"}
    if profile:
        data["IamInstanceProfile"] = profile
    return ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData=data)[
        "LaunchTemplate"]["LaunchTemplateId"]


def create_fleet(ec2, lt: str, kind: str, count: int = 2, **extra) -> dict:
    return ec2.create_fleet(
        Type=kind, LaunchTemplateConfigs=[{"LaunchTemplateSpecification": {
            "LaunchTemplateId": lt, "Version": "$Latest"}}],
        TargetCapacitySpecification={"TotalTargetCapacity": count,
                                     "DefaultTargetCapacityType": "spot"}, **extra)


def fleet_role(iam) -> str:
    return iam.create_role(RoleName="aws-ec2-spot-fleet-tagging-role",
                           AssumeRolePolicyDocument=TRUST_SPOTFLEET)["Role"]["Arn"]


def spot_fleet(ec2, role_arn: str, count: int = 2, **extra) -> str:
    return ec2.request_spot_fleet(SpotFleetRequestConfig={
        "IamFleetRole": role_arn, "TargetCapacity": count, "AllocationStrategy": "lowestPrice",
        "LaunchSpecifications": [{"ImageId": AMI, "InstanceType": "t3.micro"}], **extra})[
        "SpotFleetRequestId"]


def states(ec2, ids: list[str]) -> set[str]:
    return {i["State"]["Name"] for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]
            for i in r["Instances"]}


def error(excinfo) -> tuple[str, str]:
    return excinfo.value.response["Error"]["Code"], excinfo.value.response["Error"]["Message"]


# ---------------------------------------------------------------------------------------------
# ValidUntil


@pytest.mark.parametrize("kind", ["maintain", "request"])
def test_an_ec2_fleet_ends_at_its_valid_until_and_terminates_its_instances(gw, kind):
    ec2 = client("ec2", gw.url)
    until = later(600)
    fleet = create_fleet(ec2, template(ec2), kind, ValidUntil=until,
                         TerminateInstancesWithExpiration=True)["FleetId"]
    ids = [i for f in ec2.describe_fleet_instances(FleetId=fleet)["ActiveInstances"]
           for i in [f["InstanceId"]]]
    assert len(ids) == 2

    assert gw.tick(until.timestamp() - 1) == {}          # not yet: nothing happens
    assert ec2.describe_fleets(FleetIds=[fleet])["Fleets"][0]["FleetState"] == "active"
    assert gw.tick(until.timestamp()) == {"FleetRules": {"expired": [fleet]}}

    assert ec2.describe_fleets(FleetIds=[fleet])["Fleets"][0]["FleetState"].startswith(
        "deleted")
    assert states(ec2, ids) <= {"shutting-down", "terminated"}
    assert gw.tick(until.timestamp() + 60) == {}          # once


def test_a_spot_fleet_ends_at_its_valid_until_keeping_instances_without_the_flag(gw):
    ec2, iam = client("ec2", gw.url), client("iam", gw.url)
    role = fleet_role(iam)
    until = later(600)
    ending = spot_fleet(ec2, role, ValidUntil=until, TerminateInstancesWithExpiration=True)
    keeping = spot_fleet(ec2, role, ValidUntil=until, TerminateInstancesWithExpiration=False)
    members = {f: [i["InstanceId"] for i in ec2.describe_spot_fleet_instances(
        SpotFleetRequestId=f)["ActiveInstances"]] for f in (ending, keeping)}

    done = gw.tick(until.timestamp() + 1)

    assert sorted(done["FleetRules"]["expired"]) == sorted([ending, keeping])
    state = {c["SpotFleetRequestId"]: c["SpotFleetRequestState"] for c in
             ec2.describe_spot_fleet_requests(SpotFleetRequestIds=[ending, keeping])[
                 "SpotFleetRequestConfigs"]}
    # moto forgets a request cancelled with its instances (AWS lists it for 48 h, cancelled)
    assert state.get(ending, "cancelled").startswith("cancelled")
    assert state[keeping].startswith("cancelled")
    assert states(ec2, members[ending]) <= {"shutting-down", "terminated"}
    assert states(ec2, members[keeping]) == {"running"}


def test_an_instant_fleet_and_a_fleet_without_valid_until_never_expire(gw):
    ec2 = client("ec2", gw.url)
    lt = template(ec2)
    instant = create_fleet(ec2, lt, "instant", ValidUntil=later(60))
    lasting = create_fleet(ec2, lt, "maintain")["FleetId"]

    assert gw.tick(time.time() + 86400) == {}
    ids = [i for g in instant["Instances"] for i in g["InstanceIds"]]
    assert states(ec2, ids) == {"running"}
    assert ec2.describe_fleets(FleetIds=[lasting])["Fleets"][0]["FleetState"] == "active"


def _inject(ec2, operation: str, key: str, value: str) -> None:
    """Send a parameter botocore's model does not have (as a hand-made request could)."""
    def add(request, **_):
        request.data[key] = value    # the query parameters, not yet encoded
    ec2.meta.events.register(f"before-sign.ec2.{operation}", add)


def test_valid_until_cannot_be_modified(gw):
    ec2, iam = client("ec2", gw.url), client("iam", gw.url)
    fleet = create_fleet(ec2, template(ec2), "maintain", ValidUntil=later(600))["FleetId"]
    sfr = spot_fleet(ec2, fleet_role(iam), ValidUntil=later(600), Type="maintain")
    _inject(ec2, "ModifyFleet", "ValidUntil", "2099-01-01T00:00:00Z")
    _inject(ec2, "ModifySpotFleetRequest", "SpotFleetRequestConfig.ValidUntil", "2099-01-01")

    with pytest.raises(ClientError) as e:
        ec2.modify_fleet(FleetId=fleet, TargetCapacitySpecification={"TotalTargetCapacity": 3})
    assert error(e) == ("UnknownParameter", "The parameter ValidUntil is not recognized")
    with pytest.raises(ClientError) as e:
        ec2.modify_spot_fleet_request(SpotFleetRequestId=sfr, TargetCapacity=3)
    assert error(e)[0] == "UnknownParameter"
    assert gw.rule(FleetRules).fleets[fleet].valid_until < time.time() + 700


# ---------------------------------------------------------------------------------------------
# Requests AWS refuses


def test_a_spot_fleet_whose_role_does_not_exist_is_refused_and_nothing_is_made(gw):
    ec2, iam = client("ec2", gw.url), client("iam", gw.url)
    missing = "arn:aws:iam::123456789012:role/aws-ec2-spot-fleet-tagging-role"

    with pytest.raises(ClientError) as e:
        spot_fleet(ec2, missing)

    assert error(e) == ("InvalidSpotFleetRequestConfig",
                        "Parameter: SpotFleetRequestConfig.IamFleetRole is invalid.")
    assert ec2.describe_spot_fleet_requests()["SpotFleetRequestConfigs"] == []
    assert spot_fleet(ec2, fleet_role(iam)).startswith("sfr-")   # the control: role exists


@pytest.mark.parametrize("kind", ["request", "instant"])
def test_excess_capacity_termination_policy_is_refused_unless_maintain(gw, kind):
    ec2 = client("ec2", gw.url)
    lt = template(ec2)

    with pytest.raises(ClientError) as e:
        create_fleet(ec2, lt, kind, ExcessCapacityTerminationPolicy="termination")

    assert error(e)[0] == "InvalidParameterCombination" and "maintain" in error(e)[1]
    assert ec2.describe_fleets()["Fleets"] == []
    assert create_fleet(ec2, lt, "maintain", ExcessCapacityTerminationPolicy="termination")[
        "FleetId"].startswith("fleet-")


# ---------------------------------------------------------------------------------------------
# Instance profiles propagate


def _profile(iam, name: str = "annex-profile") -> str:
    iam.create_role(RoleName=name + "-role", AssumeRolePolicyDocument=TRUST_EC2)
    arn = iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name + "-role")
    return arn


def test_a_new_instance_profile_is_refused_by_launches_for_five_seconds(gw):
    ec2, iam = client("ec2", gw.url), client("iam", gw.url)
    arn = _profile(iam)

    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1,
                          IamInstanceProfile={"Name": "annex-profile"})
    assert error(e) == ("InvalidParameterValue", "Value (annex-profile) for parameter "
                        "iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name")
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, IamInstanceProfile={"Arn": arn})
    assert error(e)[1].endswith("Invalid IAM Instance Profile ARN")
    lt = template(ec2, profile={"Name": "annex-profile"})
    with pytest.raises(ClientError) as e:
        create_fleet(ec2, lt, "instant")
    assert "Invalid IAM Instance Profile" in error(e)[1]
    with pytest.raises(ClientError) as e:
        spot_fleet(ec2, fleet_role(iam), LaunchSpecifications=[{
            "ImageId": AMI, "InstanceType": "t3.micro", "IamInstanceProfile": {"Arn": arn}}])
    assert "Invalid IAM Instance Profile" in error(e)[1]
    assert ec2.describe_instances()["Reservations"] == []

    gw.clock.now += 4.9
    with pytest.raises(ClientError):
        ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1,
                          IamInstanceProfile={"Name": "annex-profile"})
    gw.clock.now += 0.2    # 5 s after AddRoleToInstanceProfile: IAM has caught up
    ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1,
                      IamInstanceProfile={"Name": "annex-profile"})
    assert create_fleet(ec2, lt, "instant")["Instances"]


def test_a_profile_made_by_a_stack_is_young_too_and_other_launches_are_not_held(gw):
    ec2, cfn = client("ec2", gw.url), client("cloudformation", gw.url)
    cfn.create_stack(StackName="prof", TemplateBody=json.dumps({"Resources": {
        "Role": {"Type": "AWS::IAM::Role", "Properties": {
            "AssumeRolePolicyDocument": json.loads(TRUST_EC2)}},
        "Profile": {"Type": "AWS::IAM::InstanceProfile", "Properties": {
            "Roles": [{"Ref": "Role"}]}}}}))
    name = next(r["PhysicalResourceId"] for r in cfn.list_stack_resources(StackName="prof")[
        "StackResourceSummaries"] if r["ResourceType"] == "AWS::IAM::InstanceProfile")

    assert ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1)["Instances"]   # no profile
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, IamInstanceProfile={"Name": name})
    assert "Invalid IAM Instance Profile name" in error(e)[1]
    gw.clock.now += 5
    assert ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1,
                             IamInstanceProfile={"Name": name})["Instances"]


def test_create_right_after_setup_succeeds_through_the_launch_retries(account, gateway,
                                                                      tmp_path, monkeypatch,
                                                                      capsys):
    """``setup`` then ``create`` at once, all through the strict gateway: the first
    RunInstances meets the young instance profile and the launch retries wait it out."""
    from condor_annex import config
    from condor_annex.cli.main import main

    gateway.profile_age_s = 2.0
    config.write_block("gateway", {"ANNEX_AWS_ENDPOINT_URL": gateway.url})
    monkeypatch.chdir(tmp_path)

    assert main(["setup"]) == 0
    assert main(["create", "fresh", "--count", "2", "--duration", "20m", "--no-owner"]) == 0, \
        capsys.readouterr().err

    outcomes = gateway.outcomes("ec2.RunInstances")
    assert outcomes[0] == "refused" and outcomes[-1] == "forwarded", outcomes
    ec2 = client("ec2", gateway.url)
    live = [i for r in ec2.describe_instances(Filters=[
        {"Name": "tag:htcondor:AnnexName", "Values": ["fresh"]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])["Reservations"]
        for i in r["Instances"]]
    assert len(live) == 2



def test_a_removal_that_lost_the_race_to_another_gets_iams_no_such_entity(gw):
    """``off`` and the lease function ending one annex remove its role from its profile at the
    same moment; both pass the gateway's check, moto removes it once and fails the other with an
    HTTP 500 page (seen in the e2e suite as "iam.RemoveRoleFromInstanceProfile:
    NotImplemented").  IAM answers the loser NoSuchEntity (404), which the product takes as
    done: the rule re-checks a 5xx reply of that call and answers so."""
    from condor_annex.providers.local.gateway_call import Call
    from condor_annex.providers.local.strict_profiles import ProfilePropagation
    iam = client("iam", gw.url)
    _profile(iam, "raced")
    call = Call("iam", "RemoveRoleFromInstanceProfile", "query",
                params=(("InstanceProfileName", "raced"), ("RoleName", "raced-role")),
                region="us-east-1")
    rule = gw.rule(ProfilePropagation)
    moto_500 = (500, [("Content-Type", "text/html")], b"<html>Internal Server Error</html>")
    # The winner's removal has not happened yet: moto's own answer stands.
    assert rule.after(call, moto_500) == moto_500
    iam.remove_role_from_instance_profile(InstanceProfileName="raced", RoleName="raced-role")
    status, _headers, body = rule.after(call, moto_500)
    assert status == 404 and b"NoSuchEntity" in body
    # And through the gateway, a second removal is NoSuchEntity (the check before moto).
    with pytest.raises(ClientError) as e:
        iam.remove_role_from_instance_profile(InstanceProfileName="raced", RoleName="raced-role")
    assert error(e)[0] == "NoSuchEntity"
