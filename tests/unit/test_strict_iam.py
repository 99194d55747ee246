"""The strict local cloud evaluates instance roles' S3 reads as IAM does
(:mod:`condor_annex.providers.local.strict_iam`); moto alone lets any role read any object.

Every test reads through the gateway with an access key registered as a role's (what the local
IMDS hands an instance), with a positive control in the same test.
"""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from condor_annex.providers.aws.session import make_client

BUCKET = "iso-bundles"


def _trust() -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
        "Action": "sts:AssumeRole"}]})


def _policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _allow(resource, action="s3:GetObject", **extra) -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


@pytest.fixture
def bundles(aws):
    """A bucket holding config-a.tar.gz and config-b.tar.gz (written by the CLI user)."""
    s3 = make_client(aws, "s3")
    s3.create_bucket(Bucket=BUCKET)
    for annex in ("a", "b"):
        s3.put_object(Bucket=BUCKET, Key=f"config-{annex}.tar.gz", Body=b"token of " + annex.encode())
    return aws


def _role(aws, name: str, *statements: dict, boundary: str | None = None,
          managed: str | None = None) -> None:
    iam = make_client(aws, "iam")
    kw = {"PermissionsBoundary": boundary} if boundary else {}
    iam.create_role(RoleName=name, Path="/condor-annex/annex/",
                    AssumeRolePolicyDocument=_trust(), **kw)
    if statements:
        iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=_policy(*statements))
    if managed:
        iam.attach_role_policy(RoleName=name, PolicyArn=managed)


def _s3_as(url: str, key: str):
    """An S3 client signing with ``key`` (an instance's IMDS credentials), through ``url``."""
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key="secret",
                        aws_session_token="session",
                        config=Config(retries={"max_attempts": 1},
                                      s3={"addressing_style": "path"}))


def _read(s3, annex: str) -> bytes | str:
    try:
        return s3.get_object(Bucket=BUCKET, Key=f"config-{annex}.tar.gz")["Body"].read()
    except ClientError as e:
        return e.response["Error"]["Code"]


def test_a_role_reads_its_own_bundle_and_not_another_annexes(bundles, gateway):
    _role(bundles, "condor-annex-a", _allow(f"arn:aws:s3:::{BUCKET}/config-a.tar.gz"))
    gateway.register_role_key("ASIAROLEA", "condor-annex-a")
    s3 = _s3_as(gateway.url, "ASIAROLEA")

    assert _read(s3, "a") == b"token of a"          # positive control
    assert _read(s3, "b") == "AccessDenied"
    with pytest.raises(ClientError) as head:
        s3.head_object(Bucket=BUCKET, Key="config-b.tar.gz")
    assert head.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert s3.head_object(Bucket=BUCKET, Key="config-a.tar.gz")["ContentLength"] == 10


def test_moto_alone_lets_the_role_read_every_bundle(bundles, moto_endpoint):
    # Why the rule exists: the same role, straight to moto, reads B's bundle.
    _role(bundles, "condor-annex-a", _allow(f"arn:aws:s3:::{BUCKET}/config-a.tar.gz"))
    assert _read(_s3_as(moto_endpoint, "ASIAROLEA"), "b") == b"token of b"


def test_a_wildcard_resource_allows_both_and_a_question_mark_one_character(bundles, gateway):
    _role(bundles, "wide", _allow(f"arn:aws:s3:::{BUCKET}/config-*.tar.gz"))
    _role(bundles, "narrow", _allow(f"arn:aws:s3:::{BUCKET}/config-?.tar.gz",
                                    action=["s3:Get*"]))
    _role(bundles, "other-bucket", _allow("arn:aws:s3:::another/config-*.tar.gz"))
    for key, role in (("K1", "wide"), ("K2", "narrow"), ("K3", "other-bucket")):
        gateway.register_role_key(key, role)

    assert [_read(_s3_as(gateway.url, "K1"), a) for a in "ab"] == [b"token of a", b"token of b"]
    assert [_read(_s3_as(gateway.url, "K2"), a) for a in "ab"] == [b"token of a", b"token of b"]
    assert _read(_s3_as(gateway.url, "K3"), "a") == "AccessDenied"


def test_an_explicit_deny_wins_over_an_allow(bundles, gateway):
    _role(bundles, "denied", _allow(f"arn:aws:s3:::{BUCKET}/*"),
          {"Effect": "Deny", "Action": "s3:*", "Resource": f"arn:aws:s3:::{BUCKET}/config-b*"})
    gateway.register_role_key("KD", "denied")
    s3 = _s3_as(gateway.url, "KD")

    assert _read(s3, "a") == b"token of a"
    assert _read(s3, "b") == "AccessDenied"


def test_a_condition_it_does_not_understand_fails_closed(bundles, gateway):
    _role(bundles, "cond",
          _allow(f"arn:aws:s3:::{BUCKET}/config-a.tar.gz"),
          _allow(f"arn:aws:s3:::{BUCKET}/config-b.tar.gz", Condition={
              "StringEquals": {"aws:ResourceTag/htcondor:AnnexName": "${ec2:InstanceTag}"}}))
    gateway.register_role_key("KC", "cond")
    s3 = _s3_as(gateway.url, "KC")

    assert _read(s3, "a") == b"token of a"
    assert _read(s3, "b") == "AccessDenied"


def test_the_permissions_boundary_and_managed_policies_count(bundles, gateway):
    iam = make_client(bundles, "iam")
    only_a = iam.create_policy(PolicyName="only-a", PolicyDocument=_policy(
        _allow(f"arn:aws:s3:::{BUCKET}/config-a.tar.gz")))["Policy"]["Arn"]
    everything = iam.create_policy(PolicyName="everything", PolicyDocument=_policy(
        _allow("*", action="s3:*")))["Policy"]["Arn"]
    # Identity allows all (a managed policy); the boundary only A's bundle.
    _role(bundles, "bounded", boundary=only_a, managed=everything)
    _role(bundles, "no-policy")
    gateway.register_role_key("KB", "bounded")
    gateway.register_role_key("KN", "no-policy")

    assert _read(_s3_as(gateway.url, "KB"), "a") == b"token of a"
    assert _read(_s3_as(gateway.url, "KB"), "b") == "AccessDenied"
    assert _read(_s3_as(gateway.url, "KN"), "a") == "AccessDenied"


def test_other_keys_and_deleted_roles(bundles, gateway):
    _role(bundles, "gone", _allow("*", action="s3:*"))
    gateway.register_role_key("KG", "gone")
    assert _read(_s3_as(gateway.url, "KG"), "b") == b"token of b"
    iam = make_client(bundles, "iam")
    iam.delete_role_policy(RoleName="gone", PolicyName="p")
    iam.delete_role(RoleName="gone")

    assert _read(_s3_as(gateway.url, "KG"), "b") == "AccessDenied"
    # The CLI user's key is not a role's: not evaluated here.
    assert _read(_s3_as(gateway.url, "testing"), "b") == b"token of b"


def test_the_setup_stacks_instance_role_reads_the_agent_and_no_bundle(aws, gateway, tmp_path):
    """Regression: moto's CloudFormation keeps a role's inline ``Policies`` as Python's repr
    (single quotes); strict IAM failed to parse it and denied the image builder's agent fetch
    (``image build`` on the local cloud: AccessDenied).  The stack's InstanceRole may read
    ``agent/*`` and no config bundle."""
    import dataclasses

    from condor_annex.providers.aws.agent_package import agent_key
    from condor_annex.providers.aws.setup import setup

    outputs = setup(dataclasses.replace(aws, endpoint_url=gateway.url), key_dir=tmp_path / "k",
                    poll_s=0.1, deadline_s=60)
    iam = make_client(aws, "iam")
    role = iam.get_instance_profile(InstanceProfileName=outputs.instance_profile_arn.split("/")[-1]
                                    )["InstanceProfile"]["Roles"][0]["RoleName"]
    make_client(aws, "s3").put_object(Bucket=outputs.bucket, Key="config-x.tar.gz", Body=b"t")
    gateway.register_role_key("ASIASTACKROLE", role)
    s3 = _s3_as(gateway.url, "ASIASTACKROLE")
    assert s3.head_object(Bucket=outputs.bucket, Key=agent_key())["ContentLength"] > 1000
    with pytest.raises(ClientError) as denied:
        s3.get_object(Bucket=outputs.bucket, Key="config-x.tar.gz")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
