"""``condor_annex sweep``: the owner tag on everything a create makes, and the sweep that ends
this user's orphans and nothing else (issue 11, item 6), on the moto server.

Two IAM users share the account: alice (the command line's keys) and bob (a provider of his
own).  Each plants one orphan of each kind; resources without our tags sit beside them.  What is
in the cloud is read back with plain boto3 calls, not with the code under test.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import pytest

from condor_annex import config
from condor_annex.cli.main import main
from condor_annex.config import AwsSettings
from condor_annex.model import (SPOT_API_SPOT_FLEET, TAG_ANNEX_NAME, TAG_ANNEX_OWNER,
                                FleetRequest, SpotSpec, new_client_token,
                                parse_spot_fleet_config)
from condor_annex.providers.aws.instance_settings import annex_tags
from condor_annex.providers.aws.provider import AwsProvider
from condor_annex.providers.aws.session import make_client

MOTO_AMI = "ami-03cf127a"   # as tests/aws/conftest.py (an AMI moto knows)

ROLE_PATH = "/condor-annex/annex/"


def _user(aws: AwsSettings, name: str, key_files: tuple[str, str]) -> str:
    """An IAM user whose access key is written to ``key_files``; returns its ARN."""
    iam = make_client(aws, "iam")
    arn = iam.create_user(UserName=name)["User"]["Arn"]
    key = iam.create_access_key(UserName=name)["AccessKey"]
    for path, value in zip(key_files, (key["AccessKeyId"], key["SecretAccessKey"])):
        with open(path, "w") as f:
            f.write(value + "\n")
    return arn


@pytest.fixture
def users(account, outputs, tmp_path, monkeypatch):
    """(alice, bob): providers of two IAM users; the command line runs as alice."""
    config.write_block("setup", config.setup_knobs(outputs))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    bob_keys = (str(tmp_path / "bob.key"), str(tmp_path / "bob.secret"))
    for path in bob_keys:
        open(path, "w").close()
        (tmp_path / path).chmod(0o600)
    alice_arn = _user(account, "alice", (account.access_key_file, account.secret_key_file))
    bob_arn = _user(account, "bob", bob_keys)
    bob_settings = AwsSettings(region=account.region, endpoint_url=account.endpoint_url,
                               access_key_file=bob_keys[0], secret_key_file=bob_keys[1])
    alice, bob = AwsProvider(account, outputs), AwsProvider(bob_settings, outputs)
    assert (alice.owner(), bob.owner()) == (alice_arn, bob_arn)
    return alice, bob


def run(argv, capsys) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _fleet(provider: AwsProvider, annex: str, *, spot_fleet: bool = False,
           lease_end: datetime | None = None):
    """Launch a one-instance fleet for ``annex``: an instant EC2 Fleet, or a Spot Fleet
    request."""
    outputs = provider.outputs
    end = lease_end or datetime.now(timezone.utc) + timedelta(hours=1)
    spot = SpotSpec(instance_types=(("m5.large", 1.0),)) if not spot_fleet else SpotSpec(
        api=SPOT_API_SPOT_FLEET, fleet_type="request", iam_fleet_role=outputs.spot_fleet_role_arn,
        spot_fleet_config=parse_spot_fleet_config(json.dumps(
            {"LaunchSpecifications": [{"InstanceType": "m5.large", "WeightedCapacity": 1}]})))
    return provider.launch_fleet(FleetRequest(
        annex_name=annex, client_token=new_client_token(annex), target_capacity=1,
        valid_until=end, image_id=MOTO_AMI, instance_profile_arn=outputs.instance_profile_arn,
        spot=spot, security_group_ids=(outputs.security_group_id,), key_name=outputs.key_name,
        lease_end=end))


def _launch(provider: AwsProvider, launch_request, annex: str) -> list[str]:
    return list(provider.launch(launch_request(annex)).instance_ids)


def _create_elsewhere(tmp_path, capsys, *argv: str) -> None:
    """``create`` with another state file (another machine's, or one lost since): the default
    state file does not know the annex."""
    config.write_block("elsewhere", {"ANNEX_STATE_FILE": str(tmp_path / "elsewhere.sqlite3")})
    try:
        assert run(["create", *argv], capsys)[0] == 0
    finally:
        config.remove_block("elsewhere")


def _past() -> datetime:
    return datetime.now(timezone.utc) - timedelta(hours=1)


class World:
    """Everything in the account that the sweep could touch, read with plain boto3 calls."""

    def __init__(self, aws: AwsSettings, outputs) -> None:
        self.aws, self.outputs = aws, outputs

    def ids(self) -> set[str]:
        ec2 = make_client(self.aws, "ec2")
        found = {i["InstanceId"] for r in ec2.describe_instances(Filters=[{
            "Name": "instance-state-name", "Values": ["pending", "running"]}])["Reservations"]
            for i in r["Instances"]}
        found |= {f["FleetId"] for f in ec2.describe_fleets()["Fleets"]
                  if not f["FleetState"].startswith("deleted")}
        found |= {f["SpotFleetRequestId"] for f in ec2.describe_spot_fleet_requests()[
            "SpotFleetRequestConfigs"] if not f["SpotFleetRequestState"].startswith("cancel")}
        found |= {t["LaunchTemplateId"] for t in ec2.describe_launch_templates()[
            "LaunchTemplates"]}
        sch = make_client(self.aws, "scheduler")
        found |= {s["Name"] for s in sch.list_schedules()["Schedules"]}
        s3 = make_client(self.aws, "s3")
        found |= {o["Key"] for o in s3.list_objects_v2(Bucket=self.outputs.bucket).get(
            "Contents", [])}
        iam = make_client(self.aws, "iam")
        found |= {r["RoleName"] for r in iam.list_roles()["Roles"] if r["Path"] == ROLE_PATH}
        found |= {p["InstanceProfileName"] + " (profile)" for p in iam.list_instance_profiles()[
            "InstanceProfiles"] if p["Path"] == ROLE_PATH}
        return found


def test_create_tags_everything_it_makes_with_the_callers_identity(users, account, outputs,
                                                                   capsys):
    alice, _ = users
    me = alice.owner()
    assert run(["create", "tagged", "--count", "1"], capsys)[0] == 0
    assert run(["create", "tagged-spot", "--spot", "--capacity", "1",
                "--instance-types", "m5.large"], capsys)[0] == 0
    sfr = _fleet(alice, "tagged-sfr", spot_fleet=True)

    ec2 = make_client(account, "ec2")

    def owner_of(tags) -> str:
        return {t["Key"]: t["Value"] for t in tags or []}.get(TAG_ANNEX_OWNER, "")

    instances = [i for r in ec2.describe_instances(Filters=[{
        "Name": "tag-key", "Values": [TAG_ANNEX_NAME]}])["Reservations"] for i in r["Instances"]]
    assert len(instances) == 3
    assert {owner_of(i["Tags"]) for i in instances} == {me}
    volumes = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id",
                                             "Values": [i["InstanceId"] for i in instances]}])
    assert volumes["Volumes"] and {owner_of(v.get("Tags")) for v in volumes["Volumes"]} == {me}
    [fleet] = ec2.describe_fleets()["Fleets"]
    [request] = ec2.describe_spot_fleet_requests(
        SpotFleetRequestIds=[sfr.fleet_id])["SpotFleetRequestConfigs"]
    templates = ec2.describe_launch_templates()["LaunchTemplates"]
    assert len(templates) == 2
    assert {owner_of(r.get("Tags")) for r in [fleet, request, *templates]} == {me}

    iam = make_client(account, "iam")
    for name in ("condor-annex-tagged", "condor-annex-tagged-spot"):
        assert owner_of(iam.list_role_tags(RoleName=name)["Tags"]) == me
        # (moto has no ListInstanceProfileTags; GetInstanceProfile echoes the tags)
        assert owner_of(iam.get_instance_profile(InstanceProfileName=name)[
            "InstanceProfile"].get("Tags")) == me
    s3 = make_client(account, "s3")
    for annex in ("tagged", "tagged-spot"):
        tags = s3.get_object_tagging(Bucket=outputs.bucket, Key=f"config-{annex}.tar.gz")
        assert {t["Key"]: t["Value"] for t in tags["TagSet"]} == {TAG_ANNEX_NAME: annex,
                                                                 TAG_ANNEX_OWNER: me}
        # A schedule takes no tags: its event names the owner.
        event = json.loads(make_client(account, "scheduler").get_schedule(
            Name=f"annex-lease-{annex}")["Target"]["Input"])
        assert event["AnnexOwner"] == me


def test_sweep_lists_and_ends_exactly_this_owners_orphans(users, account, outputs, tmp_path,
                                                          launch_request, capsys, monkeypatch):
    monkeypatch.setattr("condor_annex.providers.aws.orphans.GRACE_S", 0.0)
    alice, bob = users
    ec2, s3 = make_client(account, "ec2"), make_client(account, "s3")
    sch = make_client(account, "scheduler")

    # alice's orphans, one annex per case.
    _create_elsewhere(tmp_path, capsys, "gone", "--count", "1")
    sch.delete_schedule(Name="annex-lease-gone")            # its lease removed behind our back
    alice.create_lease("past", _past())                     # a fleet whose lease has passed
    past = _fleet(alice, "past", lease_end=_past())
    sfr = _fleet(alice, "sfr", spot_fleet=True)             # a Spot Fleet with no lease
    alice.put_bundle("lone", b"bundle")                      # a bundle with no lease
    alice.ensure_annex_role("role-only")                     # a role with no lease
    template = ec2.create_launch_template(                   # a launch template with no lease
        LaunchTemplateName="annex-lt-only", LaunchTemplateData={"ImageId": MOTO_AMI},
        TagSpecifications=[{"ResourceType": "launch-template",
                            "Tags": annex_tags("lt-only", owner=alice.owner())}])[
        "LaunchTemplate"]["LaunchTemplateId"]
    # alice's healthy annex, and one her state file knows whose lease went missing: the
    # store's annexes are the reconciler's to mend until their lease has passed.
    assert run(["create", "healthy", "--count", "1"], capsys)[0] == 0
    assert run(["create", "known", "--count", "1"], capsys)[0] == 0
    sch.delete_schedule(Name="annex-lease-known")
    known_ids = set(alice.query_instances("known"))

    # bob's, of the same kinds.
    bob.create_lease("bob-gone", datetime.now(timezone.utc) + timedelta(hours=1))
    bob.put_bundle("bob-gone", b"bundle")
    _launch(bob, launch_request, "bob-gone")
    bob.delete_lease(bob.get_lease("bob-gone"))
    bob.create_lease("bob-past", _past())
    _fleet(bob, "bob-past", lease_end=_past())
    _fleet(bob, "bob-sfr", spot_fleet=True)
    bob.put_bundle("bob-lone", b"bundle")
    bob.ensure_annex_role("bob-role")
    # An annex holding alice's bundle and bob's instance: not swept.
    alice.put_bundle("shared", b"bundle")
    _launch(bob, launch_request, "shared")

    # Without our tags: a plain instance, an annex instance without owner (older versions), a
    # launch template and a bundle-like object without tags, a lease-like schedule whose
    # event names no owner.
    ec2.run_instances(ImageId=MOTO_AMI, MinCount=1, MaxCount=1)
    ec2.run_instances(ImageId=MOTO_AMI, MinCount=1, MaxCount=1, TagSpecifications=[{
        "ResourceType": "instance", "Tags": [{"Key": TAG_ANNEX_NAME, "Value": "legacy"}]}])
    ec2.create_launch_template(LaunchTemplateName="annex-untagged",
                               LaunchTemplateData={"ImageId": MOTO_AMI})
    s3.put_object(Bucket=outputs.bucket, Key="config-untagged.tar.gz", Body=b"x")
    sch.create_schedule(
        Name="annex-lease-stray", ScheduleExpression="at(2020-01-01T00:00:00)",
        FlexibleTimeWindow={"Mode": "OFF"}, Target={
            "Arn": outputs.lease_function_arn, "RoleArn": outputs.scheduler_role_arn,
            "Input": json.dumps({"AnnexName": "stray", "LeaseExpiration": 1577836800})})

    def ids(annex: str) -> set[str]:
        return set(alice.query_instances(annex))

    expected = (
        {("instance", i, "gone") for i in ids("gone")}
        | {("bundle", "config-gone.tar.gz", "gone"), ("role", "condor-annex-gone", "gone")}
        | {("instance", i, "past") for i in ids("past")}
        | {("fleet", past.fleet_id, "past"), ("launch-template", past.launch_template_id, "past"),
           ("schedule", "annex-lease-past", "past")}
        | {("instance", i, "sfr") for i in ids("sfr")}
        | {("spot-fleet-request", sfr.fleet_id, "sfr"),
           ("launch-template", sfr.launch_template_id, "sfr")}
        | {("bundle", "config-lone.tar.gz", "lone"),
           ("role", "condor-annex-role-only", "role-only"),
           ("launch-template", template, "lt-only")})
    assert ids("gone") and ids("past") and ids("sfr")
    world = World(account, outputs)
    before = world.ids()

    code, out, err = run(["sweep", "--dry-run", "--json"], capsys)

    assert code == 0, err
    listed = json.loads(out)
    assert {(o["kind"], o["id"], o["annex"]) for o in listed} == expected
    assert len(listed) == len(expected)
    reasons = {o["annex"]: o["reason"] for o in listed}
    assert reasons["lone"] == "no lease"
    assert reasons["gone"].startswith("no lease (tag htcondor:LeaseEnd says ")
    assert reasons["past"].startswith("lease ended ")
    assert "annex shared: not swept" in err
    assert world.ids() == before                             # a dry run ends nothing

    code, out, err = run(["sweep", "--json"], capsys)

    assert code == 0, err
    assert {(o["kind"], o["id"], o["annex"]) for o in json.loads(out)} == expected
    # Exactly the orphans are gone (a role with its instance profile), and the annex the
    # store knows whose lease went missing was ended by the reconciler pass that sweep's ending
    # runs first (it is the reconciler's to mend, never sweep's); all else is as it was.
    ended = {rid for _, rid, _ in expected}
    ended |= {"condor-annex-gone (profile)", "condor-annex-role-only (profile)"}
    ended |= set(known_ids) | {"config-known.tar.gz", "condor-annex-known",
                               "condor-annex-known (profile)"}
    assert world.ids() == before - ended
    assert ended <= before
    assert alice.get_lease("healthy") and ids("healthy") and alice.bundle_exists("healthy")
    assert json.loads(run(["sweep", "--dry-run", "--json"], capsys)[1]) == []


def test_a_young_orphan_is_not_swept(users, capsys):
    alice, _ = users
    alice.put_bundle("young", b"bundle")                     # as a create would, a moment ago

    code, out, _ = run(["sweep", "--dry-run", "--json"], capsys)
    assert (code, json.loads(out)) == (0, [])
    code, out, _ = run(["sweep"], capsys)
    assert code == 0 and "Found no orphans" in out
    assert alice.bundle_exists("young")


def test_sweep_table_and_a_lease_schedule_without_owner_takes_its_annexs(
        users, account, capsys, monkeypatch):
    # A schedule cannot be tagged; one without AnnexOwner in its event is this owner's when
    # the rest of its annex is.
    monkeypatch.setattr("condor_annex.providers.aws.orphans.GRACE_S", 0.0)
    alice, _ = users
    alice.put_bundle("old", b"bundle")
    lease = alice.create_lease("old", _past())
    sch = make_client(account, "scheduler")
    schedule = sch.get_schedule(Name=lease.schedule_name)
    event = json.loads(schedule["Target"]["Input"])
    del event["AnnexOwner"]
    sch.update_schedule(Name=lease.schedule_name, ScheduleExpression=schedule[
        "ScheduleExpression"], FlexibleTimeWindow={"Mode": "OFF"},
        Target={**{k: schedule["Target"][k] for k in ("Arn", "RoleArn")},
                "Input": json.dumps(event)})

    code, out, _ = run(["sweep"], capsys)

    assert code == 0
    assert "annex-lease-old" in out and "config-old.tar.gz" in out and "(ended)" in out
    assert alice.get_lease("old") is None and not alice.bundle_exists("old")


def test_sweep_adopt_records_live_annexes_in_the_state_store(users, tmp_path, capsys):
    from condor_annex.state.store import open_store
    _create_elsewhere(tmp_path, capsys, "keep", "--count", "2")

    code, out, err = run(["sweep", "--adopt", "--dry-run", "--json"], capsys)

    assert (code, json.loads(out)) == (0, [])
    assert "adopted annex keep (2 instance(s))" in err
    with open_store() as db:
        [annex] = db.annexes()
        assert (annex.name, annex.requested) == ("keep", 2)
        assert {i.instance_id for i in db.instances("keep")} == set(users[0].query_instances(
            "keep"))
