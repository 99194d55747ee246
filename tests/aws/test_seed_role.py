"""The seed node's role, instance profile and security group, made by ``setup`` (issue 13, item
2), on the moto server.

The seed runs ``condor_annex create / status / extend / logs / off / sweep`` and condor_annexd
with its instance role's credentials.  Its policy is read back from IAM as deployed (the stack's
inline policy, every intrinsic resolved) and checked three ways: every AWS call of a full annex
cycle is an action it allows; what setup alone does (CloudFormation, the stack's own resources,
IAM users and policies) it does not; and S3 requests signed with the role's key, sent through the
AWS gateway whose strict IAM rule evaluates them as AWS does, reach the config bucket's bundles
and the seed's wheelhouse and nothing else.
"""

from __future__ import annotations

import io
import json

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from condor_annex import config
from condor_annex.cli.main import main
from condor_annex.providers.aws import policy as shipped
from condor_annex.providers.aws.session import (add_call_listener, make_client,
                                                remove_call_listener)
from condor_annex.providers.local.identities import role_access_key
from condor_annex.providers.local.strict_iam import _document, evaluate
from tests.aws.test_policy import _FREE, allowed, iam_action

ACCOUNT = "123456789012"   # moto's default account
REGION = "us-east-1"

#: Actions of the user policy that only setup, teardown, check-setup and the image builder
#: take; the rest is the annex part, which the seed's role must allow.
SETUP_ONLY = {
    "cloudformation:CreateChangeSet", "cloudformation:CreateStack",
    "cloudformation:DeleteChangeSet", "cloudformation:DeleteStack",
    "cloudformation:DescribeChangeSet", "cloudformation:DescribeStackEvents",
    "cloudformation:DescribeStacks", "cloudformation:ExecuteChangeSet",
    "cloudformation:TagResource",
    "s3:CreateBucket", "s3:DeleteBucket", "s3:DeleteBucketPolicy",
    "s3:GetBucketOwnershipControls", "s3:GetBucketPolicy", "s3:GetBucketPublicAccessBlock",
    "s3:GetBucketTagging", "s3:GetEncryptionConfiguration", "s3:PutBucketOwnershipControls",
    "s3:PutBucketPolicy", "s3:PutBucketPublicAccessBlock", "s3:PutBucketTagging",
    "s3:PutEncryptionConfiguration",
    "iam:AttachRolePolicy", "iam:DeleteRolePermissionsBoundary", "iam:DetachRolePolicy",
    "iam:GetRole", "iam:GetRolePolicy", "iam:ListAttachedRolePolicies",
    "iam:ListInstanceProfilesForRole", "iam:ListRolePolicies", "iam:PutRolePermissionsBoundary",
    "iam:UntagRole", "iam:UpdateAssumeRolePolicy",
    "iam:CreatePolicy", "iam:CreatePolicyVersion", "iam:DeletePolicy", "iam:DeletePolicyVersion",
    "iam:GetPolicy", "iam:GetPolicyVersion", "iam:ListEntitiesForPolicy",
    "iam:ListPolicyVersions", "iam:TagPolicy", "iam:ListInstanceProfiles",
    "iam:SimulatePrincipalPolicy",
    "ec2:AuthorizeSecurityGroupEgress", "ec2:AuthorizeSecurityGroupIngress",
    "ec2:CreateImage", "ec2:CreateKeyPair", "ec2:CreateSecurityGroup", "ec2:DeleteKeyPair",
    "ec2:DeleteSecurityGroup", "ec2:DescribeSecurityGroupRules", "ec2:DescribeVpcEndpoints",
    "ec2:RevokeSecurityGroupEgress", "ec2:RevokeSecurityGroupIngress", "ec2:StopInstances",
}
#: Whole services only setup uses (the lease function, its queue, alarm and rule).
SETUP_ONLY_SERVICES = ("lambda:", "sqs:", "cloudwatch:", "events:")


def _seed_role_name(outputs) -> str:
    return outputs.seed_role_arn.rsplit("/", 1)[-1]


def _seed_policy(aws, outputs) -> dict:
    """The seed role's one inline policy, as IAM holds it after the stack was made."""
    iam = make_client(aws, "iam")
    role = _seed_role_name(outputs)
    (name,) = iam.list_role_policies(RoleName=role)["PolicyNames"]
    return _document(iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])


def _boundary_arn(aws, outputs) -> str:
    from condor_annex.providers.aws.annex_role import boundary_arn
    return boundary_arn(aws, outputs)


# --- what setup makes ---------------------------------------------------------------------------

def test_setup_makes_the_seed_role_profile_and_security_group(aws, outputs):
    iam, ec2 = make_client(aws, "iam"), make_client(aws, "ec2")
    assert outputs.seed_instance_profile_arn.startswith(f"arn:aws:iam::{ACCOUNT}:instance-profile/")
    profile = iam.get_instance_profile(
        InstanceProfileName=outputs.seed_instance_profile_arn.rsplit("/", 1)[-1])[
            "InstanceProfile"]
    assert [r["Arn"] for r in profile["Roles"]] == [outputs.seed_role_arn]
    role = iam.get_role(RoleName=_seed_role_name(outputs))["Role"]
    # Not under the annex roles' path: neither the seed (nor the lease function) may change it.
    assert role["Path"] == "/condor-annex/"
    trust = role["AssumeRolePolicyDocument"]
    trust = trust if isinstance(trust, dict) else json.loads(trust)
    assert [s["Principal"] for s in trust["Statement"]] == [{"Service": "ec2.amazonaws.com"}]
    assert outputs.seed_role_arn not in (outputs.instance_profile_arn, outputs.scheduler_role_arn)

    group = ec2.describe_security_groups(
        GroupIds=[outputs.seed_security_group_id])["SecurityGroups"][0]
    inbound = sorted((p["IpProtocol"], p["FromPort"], p["ToPort"],
                      tuple(g["GroupId"] for g in p.get("UserIdGroupPairs", [])),
                      tuple(r["CidrIp"] for r in p.get("IpRanges", [])),
                      tuple(r["CidrIpv6"] for r in p.get("Ipv6Ranges", [])))
                     for p in group["IpPermissions"])
    assert inbound == [("tcp", 9618, 9618, (outputs.security_group_id,), (), ()),
                       ("udp", 9618, 9618, (outputs.security_group_id,), (), ())]
    # The annex instances' own group stays closed (nodes need no inbound port: CCB).
    assert ec2.describe_security_groups(GroupIds=[outputs.security_group_id])[
        "SecurityGroups"][0]["IpPermissions"] == []


def test_setup_records_the_seed_knobs_beside_the_others(account, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["setup"]) == 0
    capsys.readouterr()
    knobs = config.read_knobs()
    recorded = config.setup_outputs(knobs)
    assert knobs["us_east_1.ANNEX_SEED_INSTANCE_PROFILE_ARN"] == \
        recorded.seed_instance_profile_arn != ""
    assert knobs["us_east_1.ANNEX_SEED_ROLE_ARN"] == recorded.seed_role_arn != ""
    assert knobs["us_east_1.ANNEX_SEED_SECURITY_GROUP_IDS"] == \
        recorded.seed_security_group_id != ""
    # in setup's own block, with the other setup knobs
    text = config.user_config_path().read_text()
    block = text[text.index("# BEGIN condor-annex setup"):text.index("# END condor-annex setup")]
    assert "us_east_1.ANNEX_SEED_ROLE_ARN" in block and "ANNEX_DEFAULT_S3_BUCKET" in block
    seed = config.seed_outputs(knobs)
    assert (seed.region, seed.instance_profile_arn, seed.role_arn, seed.security_group_ids) == (
        REGION, recorded.seed_instance_profile_arn, recorded.seed_role_arn,
        (recorded.seed_security_group_id,))


# --- the role's policy ----------------------------------------------------------------------

def test_the_seed_policy_has_the_annex_part_of_the_user_policy_and_nothing_more(aws, outputs):
    seed = shipped.actions(_seed_policy(aws, outputs))
    user = shipped.actions(shipped.load())
    annex_part = [a for a in user if a not in SETUP_ONLY
                  and not a.startswith(SETUP_ONLY_SERVICES)
                  and not (a.startswith("cloudformation:") and a != "cloudformation:ListStackResources")]
    assert [a for a in annex_part if not allowed(a, {"Statement": _seed_policy(
        aws, outputs)["Statement"]})] == []
    assert sorted(set(seed) - set(user)) == []        # never more than the user may do
    assert len(json.dumps(_seed_policy(aws, outputs), separators=(",", ":"))) <= 10_240


def _run(argv, capsys) -> None:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, (argv, code, err)


def test_every_call_of_an_annex_cycle_is_allowed_to_the_seed(account, outputs, tmp_path,
                                                             monkeypatch, capsys):
    """What the seed runs — each kind of create, status, extend, logs, a condor_annexd pass,
    sweep, off — records its AWS calls; each is an action of the seed's policy."""
    from condor_annex.daemon.main import Daemon
    from condor_annex.service.context import Context
    from condor_annex.state.store import default_path

    config.write_block("setup", config.setup_knobs(outputs))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    sfr = tmp_path / "sfr.json"
    sfr.write_text(json.dumps({"IamFleetRole": outputs.spot_fleet_role_arn,
                               "LaunchSpecifications": [{"InstanceType": "m5.large",
                                                         "WeightedCapacity": 1}]}))
    calls: list[str] = []
    add_call_listener(calls.append)
    try:
        for argv in (["create", "od", "--count", "1", "--duration", "1h"],
                     ["create", "fl", "--spot", "--capacity", "1", "--duration", "1h"],
                     ["-annex-name", "sf", "-slots", "1", "-aws-spot-fleet-config-file",
                      str(sfr), "-yes"],
                     ["create", "au", "--autoscale", "--max", "2", "--duration", "1h"],
                     ["status"], ["extend", "od", "2h"], ["logs", "od"]):
            _run(argv, capsys)
        ctx = Context.load()
        Daemon(ctx, default_path(ctx.knobs)).one_pass()
        for argv in (["sweep"], ["off", "od", "--grace", "0"], ["off", "fl", "--grace", "0"],
                     ["off", "sf", "--grace", "0"], ["off", "au", "--grace", "0"]):
            _run(argv, capsys)
    finally:
        remove_call_listener(calls.append)
    made = sorted(set(calls) - _FREE)
    for must in ("ec2.RunInstances", "ec2.CreateFleet", "ec2.RequestSpotFleet",
                 "iam.CreateRole", "iam.DeleteRole", "scheduler.CreateSchedule",
                 "scheduler.UpdateSchedule", "s3.PutObject", "ec2.TerminateInstances",
                 "ec2.CancelSpotFleetRequests", "iam.ListRoles", "ec2.GetConsoleOutput"):
        assert must in made, must    # the cycle really went through every path
    document = _seed_policy(account, outputs)
    assert [c for c in made if not allowed(iam_action(c), document)] == []


def _verdict(document: dict, action: str, resource: str) -> str:
    return evaluate([document], action, resource, where="seed role test")


def test_the_seed_may_not_do_what_setup_alone_does(aws, outputs):
    document = _seed_policy(aws, outputs)
    stack = f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{outputs.stack_name}/x"
    for action in ("cloudformation:CreateStack", "cloudformation:UpdateStack",
                   "cloudformation:DeleteStack", "cloudformation:ExecuteChangeSet",
                   "cloudformation:CreateChangeSet", "cloudformation:DescribeStacks"):
        assert _verdict(document, action, stack) == "none", action
    assert _verdict(document, "cloudformation:ListStackResources", stack) == "allow"
    assert _verdict(document, "cloudformation:ListStackResources",
                    f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/other/x") == "none"
    role = f"arn:aws:iam::{ACCOUNT}:role/"
    for action, resource in (
            ("iam:CreateUser", f"arn:aws:iam::{ACCOUNT}:user/mallory"),
            ("iam:CreateAccessKey", f"arn:aws:iam::{ACCOUNT}:user/alice"),
            ("iam:AttachRolePolicy", role + "condor-annex/annex/condor-annex-x"),
            ("iam:PutRolePermissionsBoundary", role + "condor-annex/annex/condor-annex-x"),
            ("iam:DeleteRolePermissionsBoundary", role + "condor-annex/annex/condor-annex-x"),
            ("iam:CreatePolicy", f"arn:aws:iam::{ACCOUNT}:policy/condor-annex/x"),
            ("iam:PassRole", outputs.seed_role_arn),
            ("iam:PassRole", role + "admin"),
            ("iam:PutRolePolicy", outputs.seed_role_arn),
            ("iam:DeleteRole", outputs.seed_role_arn),
            ("iam:CreateRole", role + "admin"),
            ("lambda:UpdateFunctionCode",
             f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:condor-annex-lease"),
            ("scheduler:DeleteSchedule",
             f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/default/condor-annex-lease-sweep"),
            ("ec2:AuthorizeSecurityGroupIngress", "*"), ("ec2:DeleteSecurityGroup", "*"),
            ("ec2:CreateImage", "*"), ("ec2:DeleteKeyPair", "*"),
            ("s3:DeleteBucket", f"arn:aws:s3:::{outputs.bucket}"),
            ("s3:PutBucketPolicy", f"arn:aws:s3:::{outputs.bucket}"),
            ("s3:PutObject", f"arn:aws:s3:::{outputs.bucket}/agent/condor-annex-agent.pyz"),
            ("s3:DeleteObject", f"arn:aws:s3:::{outputs.bucket}/seed/0.1.0/MANIFEST")):
        assert _verdict(document, action, resource) == "none", (action, resource)
    for action, resource in (("iam:PassRole", role + "condor-annex/annex/condor-annex-x"),
                             ("iam:PassRole", outputs.scheduler_role_arn),
                             ("iam:PassRole", outputs.spot_fleet_role_arn),
                             ("scheduler:CreateSchedule", f"arn:aws:scheduler:{REGION}:"
                              f"{ACCOUNT}:schedule/default/annex-lease-x")):
        assert _verdict(document, action, resource) == "allow", (action, resource)


def test_annex_roles_the_seed_makes_are_bounded_and_it_ends_only_annex_resources(aws, outputs):
    """IAM conditions (not evaluated by the gateway): CreateRole and PutRolePolicy only with the
    stack's permissions boundary; terminations and deletions only of what carries an annex's
    tag; no S3 statement has a condition (they would fail closed on the local cloud)."""
    statements = _seed_policy(aws, outputs)["Statement"]

    def with_action(action):
        return [s for s in statements if action in shipped._listed(s["Action"])]

    boundary = _boundary_arn(aws, outputs)
    for action in ("iam:CreateRole", "iam:PutRolePolicy"):
        assert [s.get("Condition") for s in with_action(action)] == [
            {"StringEquals": {"iam:PermissionsBoundary": boundary}}], action
    for action in ("ec2:TerminateInstances", "ec2:DeleteFleets", "ec2:CancelSpotFleetRequests",
                   "ec2:DeleteLaunchTemplate", "ec2:GetConsoleOutput"):
        assert [s.get("Condition") for s in with_action(action)] == [
            {"Null": {"aws:ResourceTag/htcondor:AnnexName": "false"}}], action
    assert all("Condition" not in s for s in statements
               if any(a.startswith("s3:") for a in shipped._listed(s["Action"])))


# --- S3, as the gateway's strict IAM rule evaluates the role's key ------------------------------

def _as_seed(gateway, outputs):
    role = _seed_role_name(outputs)
    gateway.register_role_key(role_access_key(role), role)
    return boto3.client("s3", endpoint_url=gateway.url, region_name=REGION,
                        aws_access_key_id=role_access_key(role), aws_secret_access_key="x",
                        config=Config(retries={"max_attempts": 1}))


def _get(s3, bucket: str, key: str) -> str:
    try:
        s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return "ok"
    except ClientError as e:
        return e.response["Error"]["Code"]


def _put(s3, bucket: str, key: str) -> str:
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
        return "ok"
    except ClientError as e:
        return e.response["Error"]["Code"]


@pytest.fixture
def objects(aws, outputs):
    """An object under each prefix of the config bucket, and one in another bucket."""
    s3 = make_client(aws, "s3")
    keys = ("seed/0.1.0/MANIFEST", "config-a.tar.gz", "agent/condor-annex-agent-0.1.0.pyz",
            "logs/a/i-0123456789abcdef0/agent.log", "other/secret")
    for key in keys:
        s3.put_object(Bucket=outputs.bucket, Key=key, Body=b"x")
    s3.create_bucket(Bucket="someone-elses")
    s3.put_object(Bucket="someone-elses", Key="seed/0.1.0/MANIFEST", Body=b"x")
    return outputs


def test_the_seed_reads_its_wheelhouse_and_bundles_and_nothing_outside_the_bucket(
        objects, gateway):
    s3 = _as_seed(gateway, objects)
    bucket = objects.bucket
    assert {key: _get(s3, bucket, key) for key in (
        "seed/0.1.0/MANIFEST", "config-a.tar.gz", "agent/condor-annex-agent-0.1.0.pyz",
        "logs/a/i-0123456789abcdef0/agent.log", "other/secret")} == {
        "seed/0.1.0/MANIFEST": "ok", "config-a.tar.gz": "ok",
        "agent/condor-annex-agent-0.1.0.pyz": "ok",
        "logs/a/i-0123456789abcdef0/agent.log": "ok", "other/secret": "AccessDenied"}
    assert _get(s3, "someone-elses", "seed/0.1.0/MANIFEST") == "AccessDenied"
    # writes: bundles only (create); never the agent, the wheelhouse, or another bucket
    assert _put(s3, bucket, "config-b.tar.gz") == "ok"
    for key in ("agent/condor-annex-agent-0.1.0.pyz", "seed/0.1.0/MANIFEST", "logs/a/x"):
        assert _put(s3, bucket, key) == "AccessDenied", key
    assert _put(s3, "someone-elses", "config-b.tar.gz") == "AccessDenied"
