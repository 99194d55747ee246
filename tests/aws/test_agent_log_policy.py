"""An annex's instance role may put a failed boot's log under ``logs/<its annex>/`` only (issue
11, item 5): never under another annex's prefix, never read any log, never overwrite its
bundle.  Requests are signed with the role's key and sent through the AWS gateway in front of
moto, whose strict IAM rule evaluates them as AWS does: the role's inline policy and the
stack's permissions boundary (both must allow).
"""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from condor_annex.providers.aws import annex_role
from condor_annex.providers.aws.session import make_client
from condor_annex.providers.local.cloud import role_access_key


def _as_role(gateway, role: str):
    gateway.register_role_key(role_access_key(role), role)
    return boto3.client("s3", endpoint_url=gateway.url, region_name="us-east-1",
                        aws_access_key_id=role_access_key(role), aws_secret_access_key="x",
                        config=Config(retries={"max_attempts": 1}))


def _put(s3, bucket: str, key: str) -> str:
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=b"log\n")
        return "ok"
    except ClientError as e:
        return e.response["Error"]["Code"]


def _get(s3, bucket: str, key: str) -> str:
    try:
        s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return "ok"
    except ClientError as e:
        return e.response["Error"]["Code"]


@pytest.fixture
def roles(aws, outputs):
    """Annex roles of ``iso-a`` and ``iso-ab`` (a name that starts like the other), made as
    create makes them; every object the test reads exists."""
    for annex in ("iso-a", "iso-ab"):
        annex_role.ensure_annex_role(aws, outputs, annex)
    s3 = make_client(aws, "s3")
    for key in ("logs/iso-a/i-0123456789abcdef0/agent.log",
                "logs/iso-ab/i-0123456789abcdef0/agent.log", "config-iso-a.tar.gz"):
        s3.put_object(Bucket=outputs.bucket, Key=key, Body=b"x")
    return outputs


def test_an_annex_role_puts_its_log_under_its_own_prefix_only(roles, gateway):
    bucket = roles.bucket
    s3 = _as_role(gateway, annex_role.role_name("iso-a"))

    # Positive control: the key the agent writes (inline policy and boundary both allow it).
    assert _put(s3, bucket, "logs/iso-a/i-0123456789abcdef0/agent.log") == "ok"
    # Another annex's prefix, even one whose name starts like ours.
    assert _put(s3, bucket, "logs/iso-ab/i-0123456789abcdef0/agent.log") == "AccessDenied"
    assert _put(s3, bucket, "logs/iso-b/i-0123456789abcdef0/agent.log") == "AccessDenied"
    assert _put(s3, bucket, "logs/iso-a.log") == "AccessDenied"
    # Nothing but logs: not its bundle, not the agent zipapp.
    assert _put(s3, bucket, "config-iso-a.tar.gz") == "AccessDenied"
    assert _put(s3, bucket, "agent/condor-annex-agent-0.pyz") == "AccessDenied"
    # Logs are written, never read: not another annex's, not even its own.
    assert _get(s3, bucket, "logs/iso-ab/i-0123456789abcdef0/agent.log") == "AccessDenied"
    assert _get(s3, bucket, "logs/iso-a/i-0123456789abcdef0/agent.log") == "AccessDenied"
    # Its bundle it still reads (the grant is added beside, not instead).
    assert _get(s3, bucket, "config-iso-a.tar.gz") == "ok"


def test_the_other_annex_role_is_confined_the_same_way(roles, gateway):
    s3 = _as_role(gateway, annex_role.role_name("iso-ab"))
    assert _put(s3, roles.bucket, "logs/iso-ab/i-0fedcba9876543210/agent.log") == "ok"
    assert _put(s3, roles.bucket, "logs/iso-a/i-0fedcba9876543210/agent.log") == "AccessDenied"


def test_the_boundary_alone_does_not_let_a_role_write_logs(aws, roles, gateway):
    """The boundary allows ``logs/*`` for every annex role; it is the role's own inline policy
    that names the prefix: a role whose policy lost the grant writes nothing."""
    iam = make_client(aws, "iam")
    name = annex_role.role_name("iso-a")
    policy = annex_role.role_policy(roles, "iso-a")
    policy["Statement"] = [s for s in policy["Statement"] if s["Sid"] != "WriteOwnLogs"]
    iam.put_role_policy(RoleName=name, PolicyName=annex_role.POLICY_NAME,
                        PolicyDocument=json.dumps(policy))

    s3 = _as_role(gateway, name)
    assert _put(s3, roles.bucket, "logs/iso-a/i-0123456789abcdef0/agent.log") == "AccessDenied"


def test_setup_s_shared_instance_role_writes_no_log(aws, roles, gateway):
    """Annexes always launch with their own role; setup's shared one (the image builder's)
    has no business writing any annex's log."""
    iam = make_client(aws, "iam")
    profile = iam.get_instance_profile(InstanceProfileName=roles.instance_profile_arn.rsplit(
        "/", 1)[-1])["InstanceProfile"]
    s3 = _as_role(gateway, profile["Roles"][0]["RoleName"])
    assert _put(s3, roles.bucket, "logs/iso-a/i-0123456789abcdef0/agent.log") == "AccessDenied"
