"""Each annex's instances run with a role of their own that reads only the annex's bundle
(issue 9, item 4): made by create, reused by an add, deleted by off, a new annex's rollback and
the lease function.  Run through the AWS gateway in front of moto, whose strict IAM rule
evaluates S3 reads signed with a role's key as AWS does.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import condor_annex.lease.handler as lease_handler
from condor_annex import config
from condor_annex.cli.main import main
from condor_annex.model import TAG_ANNEX_NAME, TAG_ANNEX_OWNER
from condor_annex.providers.aws import annex_role
from condor_annex.providers.aws.identity import caller_owner
from condor_annex.providers.aws.session import make_client
from condor_annex.providers.local.cloud import role_access_key


@pytest.fixture
def cloud(account, outputs, gateway, tmp_path, monkeypatch):
    config.write_block("setup", config.setup_knobs(outputs))
    config.write_block("gateway", {"ANNEX_AWS_ENDPOINT_URL": gateway.url,
                                   "ANNEX_LISTING_LAG": "0"})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    gateway.profile_age_s = 0.5   # IAM propagation, kept short: the launch retries wait it out
    return account


def run(argv, capsys) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _roles(aws) -> dict[str, dict]:
    """Roles under the annex path: name -> {"policy": inline policy, "profiles": [...]}."""
    iam = make_client(aws, "iam")
    out = {}
    for role in iam.list_roles(PathPrefix=annex_role.ROLE_PATH)["Roles"]:
        name = role["RoleName"]
        policies = iam.list_role_policies(RoleName=name)["PolicyNames"]
        out[name] = {
            "policy": {p: iam.get_role_policy(RoleName=name, PolicyName=p)["PolicyDocument"]
                       for p in policies},
            "profiles": [p["Arn"] for p in iam.list_instance_profiles_for_role(
                RoleName=name)["InstanceProfiles"]],
            "boundary": iam.get_role(RoleName=name)["Role"].get("PermissionsBoundary", {}).get(
                "PermissionsBoundaryArn"),
            "tags": {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=name)["Tags"]},
        }
    return out


def _profiles(aws) -> list[str]:
    # (moto ignores PathPrefix here)
    return [p["InstanceProfileName"] for p in make_client(aws, "iam").list_instance_profiles(
        PathPrefix=annex_role.ROLE_PATH)["InstanceProfiles"] if p["Path"] == annex_role.ROLE_PATH]


def _instance_profiles(aws, annex) -> set[str]:
    """The instance profile of each launch of the annex (moto shows a launch's profile on its
    first instance only; EC2 on each)."""
    ec2 = make_client(aws, "ec2")
    found = set()
    for r in ec2.describe_instances(Filters=[
            {"Name": f"tag:{TAG_ANNEX_NAME}", "Values": [annex]}])["Reservations"]:
        arns = {i["IamInstanceProfile"]["Arn"] for i in r["Instances"]
                if i.get("IamInstanceProfile")}
        assert len(arns) == 1, r["Instances"]
        found |= arns
    return found


def _read_as_role(url, role, bucket, annex):
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                      aws_access_key_id=role_access_key(role), aws_secret_access_key="x",
                      config=Config(retries={"max_attempts": 1}))
    try:
        return s3.get_object(Bucket=bucket, Key=f"config-{annex}.tar.gz")["Body"].read()[:2]
    except ClientError as e:
        return e.response["Error"]["Code"]


def test_create_makes_the_annex_role_reading_only_its_bundle_and_launches_with_it(
        cloud, outputs, gateway, capsys):
    assert run(["create", "iso-a", "--count", "2"], capsys)[0] == 0
    assert run(["create", "iso-b", "--count", "1"], capsys)[0] == 0

    roles = _roles(cloud)
    assert sorted(roles) == ["condor-annex-iso-a", "condor-annex-iso-b"]
    a = roles["condor-annex-iso-a"]
    assert a["policy"] == {"condor-annex-bundle": {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadOwnBundle", "Effect": "Allow", "Action": "s3:GetObject",
             "Resource": f"arn:aws:s3:::{outputs.bucket}/config-iso-a.tar.gz"},
            {"Sid": "ReadAgent", "Effect": "Allow", "Action": "s3:GetObject",
             "Resource": f"arn:aws:s3:::{outputs.bucket}/agent/*"},
            {"Sid": "WriteOwnLogs", "Effect": "Allow", "Action": "s3:PutObject",
             "Resource": f"arn:aws:s3:::{outputs.bucket}/logs/iso-a/*"},
            {"Sid": "OwnTags", "Effect": "Allow", "Action": "ec2:DescribeTags", "Resource": "*"},
            {"Sid": "FindBucket", "Effect": "Allow",
             "Action": ["iam:GetInstanceProfile", "iam:ListRoleTags"],
             "Resource": [
                 "arn:aws:iam::123456789012:instance-profile/condor-annex/annex/"
                 "condor-annex-iso-a",
                 "arn:aws:iam::123456789012:role/condor-annex/annex/condor-annex-iso-a"]}]}}
    assert a["boundary"] and ":policy/condor-annex/" in a["boundary"]
    assert a["tags"] == {TAG_ANNEX_NAME: "iso-a", "htcondor:ConfigBucket": outputs.bucket,
                         TAG_ANNEX_OWNER: caller_owner(cloud)}
    [profile_a] = a["profiles"]
    assert profile_a.endswith(":instance-profile/condor-annex/annex/condor-annex-iso-a")
    # Every instance of the annex runs with the annex's own profile, not setup's shared one.
    assert _instance_profiles(cloud, "iso-a") == {profile_a}
    assert _instance_profiles(cloud, "iso-b") == set(roles["condor-annex-iso-b"]["profiles"])

    # What those instances' credentials may read, as AWS evaluates it (positive control first).
    for role in roles:
        gateway.register_role_key(role_access_key(role), role)
    assert _read_as_role(gateway.url, "condor-annex-iso-a", outputs.bucket, "iso-a") == b"\x1f\x8b"
    assert _read_as_role(gateway.url, "condor-annex-iso-a", outputs.bucket, "iso-b") == \
        "AccessDenied"
    assert _read_as_role(gateway.url, "condor-annex-iso-b", outputs.bucket, "iso-b") == b"\x1f\x8b"
    assert _read_as_role(gateway.url, "condor-annex-iso-b", outputs.bucket, "iso-a") == \
        "AccessDenied"


def test_an_add_reuses_the_role_and_off_deletes_it(cloud, gateway, capsys):
    assert run(["create", "reuse", "--count", "1"], capsys)[0] == 0
    [profile] = _roles(cloud)["condor-annex-reuse"]["profiles"]
    gateway.reset_counts()

    assert run(["create", "reuse", "--count", "1"], capsys)[0] == 0
    assert gateway.count("iam.CreateRole") == gateway.count("iam.PutRolePolicy") == 0
    assert gateway.count("iam.CreateInstanceProfile") == 0
    assert _instance_profiles(cloud, "reuse") == {profile}

    assert run(["off", "reuse", "--grace", "0"], capsys)[0] == 0
    assert _roles(cloud) == {} and _profiles(cloud) == []


def test_the_rollback_of_a_new_annex_deletes_its_role_but_not_an_existing_annexes(
        cloud, gateway, capsys):
    assert run(["create", "keep", "--count", "1"], capsys)[0] == 0
    gateway.fail("ec2.RunInstances", "InsufficientInstanceCapacity", "no capacity",
                 status=500, times=2)

    assert run(["create", "fresh", "--count", "1"], capsys)[0] == 1
    assert run(["create", "keep", "--count", "1"], capsys)[0] == 1
    assert sorted(_roles(cloud)) == ["condor-annex-keep"]
    assert _profiles(cloud) == ["condor-annex-keep"]


def test_the_lease_function_deletes_the_role_with_the_annex(cloud, outputs, capsys):
    assert run(["create", "leased", "--count", "1"], capsys)[0] == 0
    assert sorted(_roles(cloud)) == ["condor-annex-leased"]
    clients = {k: make_client(cloud, k) for k in ("ec2", "s3", "scheduler", "iam")}
    sch = clients["scheduler"]
    event = json.loads(sch.get_schedule(Name="annex-lease-leased")["Target"]["Input"])

    result = lease_handler.enforce(event, clients, now=event["LeaseExpiration"])

    assert result["RoleDeleted"] == 4 and result["Status"] == "ended"
    assert _roles(cloud) == {} and _profiles(cloud) == []
    # Again (a retry): nothing left, still a success.
    lease_handler.end_annex(event, clients)


def test_off_of_an_annex_with_only_a_role_left_deletes_it(cloud, outputs, capsys):
    # A lease function that stopped after the bundle: only the role is left.
    from condor_annex.config import aws_settings
    annex_role.ensure_annex_role(aws_settings(config.read_knobs()), outputs, "left")
    assert run(["off", "left", "--grace", "0"], capsys)[0] == 0
    assert _roles(cloud) == {}
    code, _, err = run(["off", "left", "--grace", "0"], capsys)
    assert code == 2 and "does not exist" in err


def test_a_user_given_instance_profile_is_used_as_it_is(cloud, outputs, capsys):
    iam = make_client(cloud, "iam")
    iam.create_role(RoleName="mine", AssumeRolePolicyDocument=json.dumps(
        annex_role.TRUST_POLICY))
    arn = iam.create_instance_profile(InstanceProfileName="mine")["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName="mine", RoleName="mine")
    knobs = config.setup_knobs(outputs)
    knobs["us_east_1.ANNEX_DEFAULT_ODI_INSTANCE_PROFILE_ARN"] = arn
    config.write_block("setup", knobs)

    assert run(["create", "own", "--count", "1"], capsys)[0] == 0
    assert _instance_profiles(cloud, "own") == {arn} and _roles(cloud) == {}


def test_setup_s_shared_profile_reads_no_bundle_and_the_boundary_limits_annex_roles(
        aws, outputs):
    from condor_annex.service.create import uses_annex_role
    assert uses_annex_role(outputs)
    iam = make_client(aws, "iam")
    profile = iam.get_instance_profile(InstanceProfileName=outputs.instance_profile_arn.rsplit(
        "/", 1)[-1])["InstanceProfile"]
    role = profile["Roles"][0]["RoleName"]
    docs = [iam.get_role_policy(RoleName=role, PolicyName=p)["PolicyDocument"]
            for p in iam.list_role_policies(RoleName=role)["PolicyNames"]]
    # The shared role reads the agent zipapp (the image builder) but no bundle.
    assert docs and not any("config-" in json.dumps(d) for d in docs)
    assert any(f"{outputs.bucket}/agent/*" in json.dumps(d) for d in docs)
    boundary = annex_role.boundary_arn(aws, outputs)
    version = iam.get_policy(PolicyArn=boundary)["Policy"]["DefaultVersionId"]
    doc = iam.get_policy_version(PolicyArn=boundary, VersionId=version)["PolicyVersion"][
        "Document"]
    s3 = [s for s in doc["Statement"] if "s3:" in json.dumps(s["Action"])]
    assert [(s["Action"], s["Resource"]) for s in s3] == [
        ("s3:GetObject", [f"arn:aws:s3:::{outputs.bucket}/config-*.tar.gz",
                          f"arn:aws:s3:::{outputs.bucket}/agent/*"]),
        ("s3:PutObject", f"arn:aws:s3:::{outputs.bucket}/logs/*")]


def test_the_lease_function_may_delete_only_annex_roles(aws, outputs):
    from condor_annex.providers.aws.setup import render_template
    import yaml

    class Loader(yaml.SafeLoader):
        pass
    for tag in ("!Sub", "!GetAtt", "!Ref", "!If", "!Not", "!Equals"):
        Loader.add_constructor(tag, lambda loader, node: loader.construct_scalar(node)
                               if isinstance(node, yaml.ScalarNode)
                               else loader.construct_sequence(node))
    template = yaml.load(render_template(), Loader=Loader)
    statements = template["Resources"]["LeaseFunctionRole"]["Properties"]["Policies"][0][
        "PolicyDocument"]["Statement"]
    [iam_stmt] = [s for s in statements if any(a.startswith("iam:") for a in s["Action"])]
    assert sorted(iam_stmt["Action"]) == ["iam:DeleteInstanceProfile", "iam:DeleteRole",
                                          "iam:DeleteRolePolicy",
                                          "iam:RemoveRoleFromInstanceProfile"]
    assert iam_stmt["Resource"] == [
        "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/condor-annex/annex/*",
        "arn:${AWS::Partition}:iam::${AWS::AccountId}:instance-profile/condor-annex/annex/*"]


def test_setup_remove_force_deletes_the_annex_roles_of_its_stack(cloud, outputs, capsys):
    # IAM refuses to delete the stack's boundary policy while roles use it as their boundary.
    from condor_annex.providers.aws import setup as aws_setup
    assert run(["create", "stays", "--count", "1"], capsys)[0] == 0
    iam = make_client(cloud, "iam")
    iam.create_role(RoleName="condor-annex-stranger", Path=annex_role.ROLE_PATH,
                    AssumeRolePolicyDocument=json.dumps(annex_role.TRUST_POLICY),
                    Tags=[{"Key": TAG_ANNEX_NAME, "Value": "stranger"},
                          {"Key": "htcondor:ConfigBucket", "Value": "another-setups-bucket"}])

    aws_setup.teardown(cloud, outputs, force=True, poll_s=0.1, deadline_s=60)

    assert sorted(_roles(cloud)) == ["condor-annex-stranger"]
