"""The shipped least-privilege policy (providers/aws/policy/condor-annex-user.json) allows every
AWS call the product makes: a full cycle on moto — setup, check-setup (plain and
--preflight), create (RunInstances and EC2 Fleet), status, extend, logs, off, setup --remove —
with every call recorded by botocore's before-call hook (session.add_call_listener) and checked
against the policy's actions.  CloudFormation's own calls (the stack's resources, made with the
caller's credentials) are checked against the template's resource types."""

from __future__ import annotations

import io
import json
import re

import pytest

from condor_annex import config
from condor_annex.cli.main import main
from condor_annex.providers.aws import policy as shipped
from condor_annex.providers.aws.session import add_call_listener, remove_call_listener

#: boto3 client name -> IAM service prefix, where they differ.
_PREFIX = {"service-quotas": "servicequotas"}
#: "<client>.<Operation>" -> the IAM action it needs, where the names differ
#: (service authorization reference: Amazon S3, AWS Lambda).
_ACTION = {"s3.HeadBucket": "s3:ListBucket", "s3.ListObjectsV2": "s3:ListBucket",
           "s3.HeadObject": "s3:GetObject", "s3.DeleteObjects": "s3:DeleteObject",
           "s3.GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
           "s3.PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
           "lambda.Invoke": "lambda:InvokeFunction"}
#: Calls that need no permission (docs.aws.amazon.com/STS/latest/APIReference/
#: API_GetCallerIdentity.html: "No permissions are required").
_FREE = {"sts.GetCallerIdentity"}

#: What CloudFormation does with the caller's credentials for each resource type of the setup
#: template (create and delete handlers of each type's resource schema).
_CFN_NEEDS = {
    "AWS::S3::Bucket": ["s3:CreateBucket", "s3:DeleteBucket", "s3:PutBucketPublicAccessBlock",
                        "s3:PutEncryptionConfiguration", "s3:PutBucketOwnershipControls"],
    "AWS::IAM::Role": ["iam:CreateRole", "iam:DeleteRole", "iam:GetRole", "iam:PutRolePolicy",
                       "iam:DeleteRolePolicy", "iam:AttachRolePolicy", "iam:DetachRolePolicy",
                       "iam:TagRole", "iam:PassRole"],
    "AWS::IAM::Policy": ["iam:PutRolePolicy", "iam:DeleteRolePolicy"],
    "AWS::IAM::ManagedPolicy": ["iam:CreatePolicy", "iam:DeletePolicy", "iam:GetPolicy",
                                "iam:ListPolicyVersions"],
    "AWS::IAM::InstanceProfile": ["iam:CreateInstanceProfile", "iam:DeleteInstanceProfile",
                                  "iam:AddRoleToInstanceProfile",
                                  "iam:RemoveRoleFromInstanceProfile"],
    "AWS::Lambda::Function": ["lambda:CreateFunction", "lambda:DeleteFunction",
                              "lambda:GetFunction", "lambda:PutFunctionConcurrency"],
    "AWS::Lambda::EventInvokeConfig": ["lambda:PutFunctionEventInvokeConfig",
                                       "lambda:DeleteFunctionEventInvokeConfig"],
    "AWS::Lambda::Permission": ["lambda:AddPermission", "lambda:RemovePermission"],
    "AWS::SQS::Queue": ["sqs:CreateQueue", "sqs:DeleteQueue", "sqs:GetQueueAttributes"],
    "AWS::CloudWatch::Alarm": ["cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms",
                               "cloudwatch:DescribeAlarms"],
    "AWS::Scheduler::Schedule": ["scheduler:CreateSchedule", "scheduler:DeleteSchedule",
                                 "scheduler:GetSchedule"],
    "AWS::Events::Rule": ["events:PutRule", "events:DeleteRule", "events:PutTargets",
                          "events:RemoveTargets", "events:DescribeRule"],
    "AWS::EC2::SecurityGroup": ["ec2:CreateSecurityGroup", "ec2:DeleteSecurityGroup",
                                "ec2:DescribeSecurityGroups"],
    "AWS::EC2::SecurityGroupIngress": ["ec2:AuthorizeSecurityGroupIngress",
                                       "ec2:RevokeSecurityGroupIngress"],
}


def iam_action(call: str) -> str:
    """The IAM action of a recorded call ``"<client>.<Operation>"``."""
    if call in _ACTION:
        return _ACTION[call]
    client, op = call.split(".", 1)
    return f"{_PREFIX.get(client, client)}:{op}"


def allowed(action: str, document: dict) -> bool:
    """Whether an Allow statement of ``document`` names ``action`` (IAM wildcards,
    case-insensitive), and no Deny does."""
    def names(stmt):
        acts = stmt["Action"]
        return any(re.fullmatch(re.escape(a).replace(r"\*", ".*"), action, re.IGNORECASE)
                   for a in ([acts] if isinstance(acts, str) else acts))
    stmts = document["Statement"]
    return any(s["Effect"] == "Allow" and names(s) for s in stmts) and \
        not any(s["Effect"] == "Deny" and names(s) for s in stmts)


@pytest.fixture
def calls():
    seen: list[str] = []
    add_call_listener(seen.append)
    yield seen
    remove_call_listener(seen.append)


def _run(argv) -> None:
    code = main(list(argv))
    assert code in (0, 1), (argv, code)   # 1: a preflight row failed on moto; not a crash


def test_full_cycle_uses_only_allowed_calls(account, calls, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    _run(["setup"])
    _run(["check-setup"])
    _run(["check-setup", "--preflight", "--count", "2"])
    _run(["create", "a", "--count", "1", "--duration", "1h"])
    _run(["create", "b", "--spot", "--capacity", "1", "--duration", "1h"])
    _run(["status"])
    _run(["extend", "a", "2h"])
    _run(["logs", "a"])
    _run(["off", "a", "--grace", "0"])
    _run(["off", "b", "--grace", "0"])
    _run(["setup", "--remove", "--force"])
    capsys.readouterr()
    made = sorted(set(calls) - _FREE)
    for must in ("ec2.RunInstances", "ec2.CreateFleet", "ec2.GetConsoleOutput",
                 "iam.CreateRole", "scheduler.CreateSchedule", "cloudformation.CreateStack",
                 "iam.SimulatePrincipalPolicy", "service-quotas.GetServiceQuota"):
        assert must in made, must   # the cycle really went through every path
    document = shipped.load()
    missing = [c for c in made if not allowed(iam_action(c), document)]
    assert missing == [], f"calls the shipped policy does not allow: {missing}"


def test_cloudformation_resources_are_allowed():
    from condor_annex.providers.aws.setup import template_source
    types = set(re.findall(r"Type: (AWS::[A-Za-z0-9:]+)", template_source()))
    assert types <= set(_CFN_NEEDS), f"new resource types to cover: {types - set(_CFN_NEEDS)}"
    document = shipped.load()
    missing = [a for t in types for a in _CFN_NEEDS[t] if not allowed(a, document)]
    assert missing == []


def test_policy_fits_a_managed_policy_and_scopes_named_resources():
    document = shipped.load()
    assert len(json.dumps(document, separators=(",", ":"))) <= 6144
    scoped = {s["Sid"]: s["Resource"] for s in document["Statement"]}
    for sid in ("StackAndAnnexRoles", "InstanceProfiles", "LeaseFunction", "Leases",
                "BundlesAndAgent", "SetupStack"):
        assert "*" not in ([scoped[sid]] if isinstance(scoped[sid], str) else scoped[sid])


def test_a_call_outside_the_policy_is_caught():
    assert not allowed(iam_action("ec2.DeleteVpc"), shipped.load())
    assert allowed(iam_action("s3.HeadObject"), shipped.load())
