"""``extend`` of every kind of annex, and the subnet launch setting, against the moto server
(through the AWS gateway, so a test can make a call fail), driven by the command line.

An extend moves four things, checked here one by one as the cloud holds them: the lease's
schedule, tag ``htcondor:LeaseEnd`` on every live instance, fleet and launch template, the
bundle's ``AnnexLeaseEnd``, and the annex's token, minted again for the new end (a stand-in for
``condor_token_create`` records each ``-lifetime`` it is asked for).
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time

import pytest

from condor_annex import config
from condor_annex.cli.main import main
from condor_annex.model import TAG_ANNEX_NAME, TAG_LEASE_END
from condor_annex.providers.aws.session import make_client

TOKEN_MARGIN = 300   # seconds of clock skew a token may outlive its lease by (issue 9)


class Cloud:
    """What the cloud holds for an annex, read back with boto3 (never through our code)."""

    def __init__(self, aws, outputs, gateway, lifetimes):
        self.aws, self.outputs, self.gateway, self.lifetimes_file = aws, outputs, gateway, \
            lifetimes

    def ec2(self):
        return make_client(self.aws, "ec2")

    def lease_end(self, annex: str) -> int:
        sch = make_client(self.aws, "scheduler")
        return json.loads(sch.get_schedule(Name=f"annex-lease-{annex}")["Target"]["Input"])[
            "LeaseExpiration"]

    def schedules(self) -> list[str]:
        return [s["Name"] for s in make_client(self.aws, "scheduler").list_schedules()[
            "Schedules"]]

    def bundle(self, annex: str) -> dict[str, str]:
        body = make_client(self.aws, "s3").get_object(
            Bucket=self.outputs.bucket, Key=f"config-{annex}.tar.gz")["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
            return {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers()}

    def bundles(self) -> list[str]:
        return [o["Key"] for o in make_client(self.aws, "s3").list_objects_v2(
            Bucket=self.outputs.bucket).get("Contents", []) if o["Key"].startswith("config-")]

    def instance_tags(self, annex: str) -> dict[str, dict[str, str]]:
        """Live instances of the annex -> their tags."""
        out = {}
        for r in self.ec2().describe_instances(Filters=[
                {"Name": f"tag:{TAG_ANNEX_NAME}", "Values": [annex]},
                {"Name": "instance-state-name", "Values": ["pending", "running"]}])[
                    "Reservations"]:
            for i in r["Instances"]:
                out[i["InstanceId"]] = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
        return out

    def resource_tag(self, resource_id: str, key: str = TAG_LEASE_END) -> str | None:
        """A tag of a fleet, Spot Fleet request or launch template, from DescribeTags (moto
        does not echo later CreateTags in DescribeSpotFleetRequests; see test_fleet.py)."""
        tags = self.ec2().describe_tags(Filters=[
            {"Name": "resource-id", "Values": [resource_id]},
            {"Name": "key", "Values": [key]}])["Tags"]
        return tags[0]["Value"] if tags else None

    def lifetimes(self) -> list[int]:
        """Every ``-lifetime`` the token command was asked for, in order."""
        text = self.lifetimes_file.read_text() if self.lifetimes_file.exists() else ""
        return [int(x) for x in text.split()]


@pytest.fixture
def cloud(account, outputs, gateway, tmp_path, monkeypatch) -> Cloud:
    """A set-up account behind the gateway, with a token command that records its lifetime."""
    lifetimes = tmp_path / "lifetimes"
    tool = tmp_path / "recording_condor_token_create"
    tool.write_text(f"""#!/bin/sh
while [ $# -gt 0 ]; do
  if [ "$1" = -lifetime ]; then echo "$2" >> {lifetimes}; fi
  shift
done
echo eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2ln
""")
    tool.chmod(0o755)
    config.write_block("setup", config.setup_knobs(outputs))
    config.write_block("gateway", {"ANNEX_AWS_ENDPOINT_URL": gateway.url,
                                   "ANNEX_LISTING_LAG": "0", "ANNEX_TOKEN_COMMAND": str(tool)})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    return Cloud(account, outputs, gateway, lifetimes)


def _one_request(attempts: list[dict]) -> dict:
    """The one launch request behind ``attempts``: a new annex's own instance profile is
    refused until IAM propagated it, and the launch is resent unchanged (same client token)."""
    assert attempts and all(a == attempts[0] for a in attempts), attempts
    return attempts[0]


def run(argv, capsys) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _sfr_file(cloud: Cloud, tmp_path) -> str:
    """A Spot Fleet config naming a fleet role that exists (the gateway, as AWS, refuses one
    that does not)."""
    iam = make_client(cloud.aws, "iam")
    role = iam.create_role(RoleName="extend-spot-fleet-role", AssumeRolePolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "spotfleet.amazonaws.com"},
            "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
    f = tmp_path / "sfr.json"
    f.write_text(json.dumps({"IamFleetRole": role, "LaunchSpecifications": [
        {"InstanceType": "m5.large", "WeightedCapacity": 1}]}))
    return str(f)


#: How each kind of annex is created (30 minutes' lease, idle 20 min, owner alice) and
#: extended to 2 hours from now: on-demand and EC2 Fleet (request) with the modern verbs, the
#: classic Spot Fleet with the classic lease update.
KINDS = {
    "on-demand": (lambda n, _: ["create", n, "--count", "2", "--duration", "30m", "--idle",
                                "20m", "--owner", "alice"],
                  lambda n: ["extend", n, "2h"]),
    "ec2-fleet-request": (lambda n, _: ["create", n, "--spot", "--capacity", "2",
                                        "--instance-types", "m5.large", "--fleet-type",
                                        "request", "--duration", "30m", "--idle", "20m",
                                        "--owner", "alice"],
                          lambda n: ["extend", n, "2h"]),
    "spot-fleet": (lambda n, sfr: ["-annex-name", n, "-slots", "2",
                                   "-aws-spot-fleet-config-file", sfr(),
                                   "-duration", "0.5", "-idle", "0.3333333", "-owner", "alice",
                                   "-yes"],
                   lambda n: ["-annex-name", n, "-duration", "2"]),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_extend_moves_schedule_tags_bundle_and_token(kind, cloud, tmp_path, capsys, sent):
    create, extend = KINDS[kind]
    name = f"x-{kind}"[:27]
    code, _, err = run(create(name, lambda: _sfr_file(cloud, tmp_path)), capsys)
    assert code == 0, err
    old_end = cloud.lease_end(name)
    before = cloud.bundle(name)["config.d/50-annex.config"]
    tags = cloud.instance_tags(name)
    assert len(tags) == 2 and {t[TAG_LEASE_END] for t in tags.values()} == {str(old_end)}
    [created_lifetime] = cloud.lifetimes()
    assert 1800 + TOKEN_MARGIN - 5 <= created_lifetime <= 1800 + TOKEN_MARGIN + 1

    started = time.time()
    code, out, err = run(extend(name), capsys)

    assert code == 0, err
    new_end = cloud.lease_end(name)
    assert started + 7200 <= new_end <= time.time() + 7201
    # Every live instance carries the new end (the lease sweep and the agent read it) ...
    assert {t[TAG_LEASE_END] for t in cloud.instance_tags(name).values()} == {str(new_end)}
    assert len(cloud.instance_tags(name)) == 2
    # ... and so do the fleet and the launch template of a fleet annex.
    ec2 = cloud.ec2()
    if kind == "ec2-fleet-request":
        fleets = [f["FleetId"] for f in ec2.describe_fleets()["Fleets"]
                  if {t["Key"]: t["Value"] for t in f.get("Tags", [])}.get(TAG_ANNEX_NAME)
                  == name]
        # The fleet's instances outlive its ValidUntil (which cannot be moved).
        params = _one_request(sent["CreateFleet"])
        assert params["TerminateInstancesWithExpiration"] is False
    elif kind == "spot-fleet":
        fleets = [f["SpotFleetRequestId"] for f in ec2.describe_spot_fleet_requests()[
            "SpotFleetRequestConfigs"]
            if {t["Key"]: t["Value"] for t in f.get("Tags", [])}.get(TAG_ANNEX_NAME) == name]
        params = _one_request(sent["RequestSpotFleet"])
        assert params["SpotFleetRequestConfig"]["TerminateInstancesWithExpiration"] is False
    else:
        fleets = []
    templates = [t["LaunchTemplateId"] for t in ec2.describe_launch_templates()[
        "LaunchTemplates"] if t["LaunchTemplateName"] == f"annex-{name}"]
    assert len(fleets) == len(templates) == (0 if kind == "on-demand" else 1)
    for resource in fleets + templates:
        assert cloud.resource_tag(resource) == str(new_end), resource
    # The bundle says the new end, with the annex's own idle time, owners and collector.
    files = cloud.bundle(name)
    after = files["config.d/50-annex.config"]
    assert f"AnnexLeaseEnd = {new_end}\n" in after
    assert after == before.replace(f"AnnexLeaseEnd = {old_end}\n",
                                   f"AnnexLeaseEnd = {new_end}\n")
    assert "STARTD_NOCLAIM_SHUTDOWN = 1200\n" in after and '"alice"' in after
    assert files["tokens.d/annex.token"].startswith("eyJ")
    # The token was minted again, to live exactly the new lease plus at most 5 min of skew.
    [_, lifetime] = cloud.lifetimes()
    assert new_end - time.time() + TOKEN_MARGIN - 2 <= lifetime \
        <= new_end - started + TOKEN_MARGIN + 1
    if kind == "ec2-fleet-request":
        # A request fleet's ValidUntil (the old end) stays: the user is told what that means.
        text = " ".join(out.split())   # rich wraps long lines
        old = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(old_end))
        assert re.fullmatch(rf"Lease updated: annex {name} now ends .* UTC\. The fleet "
                            rf"{fleets[0]} stops replacing instances at {old} UTC \(its "
                            r"ValidUntil cannot be moved\); its instances run until the lease "
                            r"ends\.", text), text
    elif kind == "on-demand":
        assert out.startswith(f"Lease updated: annex {name} now ends ") and \
            "stops replacing" not in out
    else:
        assert out.startswith("Lease updated.")

    # Re-running is harmless: everything moves again, together.
    code, _, err = run(extend(name), capsys)
    assert code == 0, err
    again = cloud.lease_end(name)
    assert again >= new_end
    assert {t[TAG_LEASE_END] for t in cloud.instance_tags(name).values()} == {str(again)}
    assert f"AnnexLeaseEnd = {again}\n" in cloud.bundle(name)["config.d/50-annex.config"]


def test_extend_refuses_an_unknown_annex_and_changes_nothing(cloud, capsys):
    code, out, err = run(["create", "real", "--count", "1"], capsys)
    assert code == 0, err
    end = cloud.lease_end("real")

    code, out, err = run(["extend", "reel", "2h"], capsys)

    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "annex 'reel' does not exist" in err and "real" in err
    assert cloud.schedules() == ["annex-lease-real"] and cloud.lease_end("real") == end
    assert cloud.bundles() == ["config-real.tar.gz"]
    assert len(cloud.lifetimes()) == 1               # no token minted for it


def test_extend_that_fails_part_way_leaves_the_old_end_and_can_be_rerun(cloud, capsys):
    code, _, err = run(["create", "half", "--count", "2", "--duration", "30m"], capsys)
    assert code == 0, err
    old_end = cloud.lease_end("half")
    cloud.gateway.fail("scheduler.UpdateSchedule", "AccessDeniedException",
                       "not allowed to update schedules", status=403, times=None)

    code, out, err = run(["extend", "half", "2h"], capsys)

    assert code == 1 and out == ""
    assert err.count("\n") == 1, err
    assert "extend stopped while moving the lease schedule" in err
    assert re.search(r"its lease still ends it at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC; run the "
                     r"same extend again", err), err
    # Nothing half-moved: the schedule, the tags and the bundle all still say the old end.
    assert cloud.lease_end("half") == old_end
    assert {t[TAG_LEASE_END] for t in cloud.instance_tags("half").values()} == {str(old_end)}
    assert f"AnnexLeaseEnd = {old_end}\n" in cloud.bundle("half")["config.d/50-annex.config"]

    cloud.gateway.clear()
    code, _, err = run(["extend", "half", "2h"], capsys)

    assert code == 0, err
    new_end = cloud.lease_end("half")
    assert new_end > old_end + 5000
    assert {t[TAG_LEASE_END] for t in cloud.instance_tags("half").values()} == {str(new_end)}
    assert f"AnnexLeaseEnd = {new_end}\n" in cloud.bundle("half")["config.d/50-annex.config"]


def test_adding_with_a_longer_duration_moves_the_tags_too(cloud, capsys):
    assert run(["create", "grow", "--count", "1", "--duration", "30m"], capsys)[0] == 0

    code, _, err = run(["create", "grow", "--count", "1", "--duration", "2h"], capsys)

    assert code == 0, err
    end = cloud.lease_end("grow")
    tags = cloud.instance_tags("grow")
    assert len(tags) == 2 and {t[TAG_LEASE_END] for t in tags.values()} == {str(end)}
    assert f"AnnexLeaseEnd = {end}\n" in cloud.bundle("grow")["config.d/50-annex.config"]


# --- subnets: --subnet-id and ANNEX_DEFAULT_SUBNET_IDS ---------------------------------------

def _nothing_created(cloud: Cloud) -> bool:
    return cloud.schedules() == [] and cloud.bundles() == [] and not any(
        r["Instances"] for r in cloud.ec2().describe_instances()["Reservations"])


@pytest.mark.parametrize("value, message", [
    ("subnet-XYZ", "--subnet-id: 'subnet-XYZ' is not a subnet id; give e.g. "
                   "subnet-0123456789abcdef0"),
    ("sg-0123456789abcdef0", "--subnet-id: 'sg-0123456789abcdef0' is not a subnet id"),
    ("subnet-0123456789abcdef0,subnet-0123456789abcdef0", "--subnet-id: a subnet is given "
                                                          "twice"),
    ("", "--subnet-id: give a subnet id"),
])
def test_bad_subnet_flag_is_one_line_and_creates_nothing(value, message, cloud, capsys):
    code, out, err = run(["create", "sn", "--count", "1", "--subnet-id", value], capsys)

    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"condor_annex: {message}"), err
    assert _nothing_created(cloud)


def test_subnet_that_does_not_exist_is_refused_before_anything_is_created(cloud, capsys):
    code, out, err = run(["create", "sn", "--count", "1", "--subnet-id",
                          "subnet-0123456789abcdef0"], capsys)

    assert code == 2 and out == "" and err == (
        "condor_annex: --subnet-id: subnet subnet-0123456789abcdef0 does not exist in region "
        "us-east-1; give a subnet of this region (see 'aws ec2 describe-subnets')\n")
    assert _nothing_created(cloud)


def test_bad_subnet_knob_names_the_knob(cloud, capsys):
    config.write_block("subnets", {"ANNEX_DEFAULT_SUBNET_IDS": "subnet-0123456789abcdef0"})
    code, _, err = run(["create", "sn", "--count", "1"], capsys)
    assert code == 2 and err.startswith("condor_annex: ANNEX_DEFAULT_SUBNET_IDS: subnet "
                                        "subnet-0123456789abcdef0 does not exist"), err
    config.write_block("subnets", {"ANNEX_DEFAULT_SUBNET_IDS": "nope"})
    code, _, err = run(["create", "sn", "--count", "1"], capsys)
    assert code == 2 and err.startswith("condor_annex: ANNEX_DEFAULT_SUBNET_IDS: 'nope' is not "
                                        "a subnet id"), err
    assert _nothing_created(cloud)


def test_subnets_reach_run_instances_and_fleets(cloud, capsys, sent):
    subnets = sorted(s["SubnetId"] for s in cloud.ec2().describe_subnets()["Subnets"])[:2]
    config.write_block("subnets", {"ANNEX_DEFAULT_SUBNET_IDS": ",".join(subnets)})

    assert run(["create", "od", "--count", "1"], capsys)[0] == 0
    assert run(["create", "fl", "--spot", "--capacity", "1", "--instance-types", "m5.large",
                "--subnet-id", subnets[1]], capsys)[0] == 0

    run_instances = _one_request(sent["RunInstances"])
    assert run_instances["SubnetId"] == subnets[0]             # the first of the knob's
    fleet = _one_request(sent["CreateFleet"])
    assert [o["SubnetId"] for o in fleet["LaunchTemplateConfigs"][0]["Overrides"]] == \
        [subnets[1]]                                           # the flag replaces the knob
    [iid] = cloud.instance_tags("od")
    inst = cloud.ec2().describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert inst["SubnetId"] == subnets[0]
