"""STS GetCallerIdentity through the strict local cloud
(:mod:`condor_annex.providers.local.strict_sts`): a request signed with an instance role's key
(what the local IMDS hands an instance) comes from that role's session, as on AWS; the CLI
user's key is still that user.  moto alone answers ``user/moto`` for the role's key.
"""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from condor_annex.providers.aws.session import make_client
from condor_annex.providers.local.identities import role_access_key

ROLE = "condor-annex-seed"


def _sts_as(url: str, key: str, secret: str = "secret", token: str | None = "session"):
    return boto3.client("sts", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        aws_session_token=token, config=Config(retries={"max_attempts": 1}))


@pytest.fixture
def seed_role(aws) -> dict:
    """The seed's role (under a path, as setup makes it)."""
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
        "Action": "sts:AssumeRole"}]})
    return make_client(aws, "iam").create_role(
        RoleName=ROLE, Path="/condor-annex/seed/", AssumeRolePolicyDocument=trust)["Role"]


def test_a_role_key_is_the_role_session_and_the_cli_user_is_still_the_user(aws, gateway,
                                                                           seed_role):
    key = role_access_key(ROLE)
    gateway.register_role_key(key, ROLE)
    me = _sts_as(gateway.url, key).get_caller_identity()
    assert me["Arn"] == f"arn:aws:sts::123456789012:assumed-role/{ROLE}/{ROLE}"
    assert me["UserId"] == f"{seed_role['RoleId']}:{ROLE}"
    assert me["Account"] == "123456789012"

    iam = make_client(aws, "iam")
    iam.create_user(UserName="annex-admin")
    cli = iam.create_access_key(UserName="annex-admin")["AccessKey"]
    user = _sts_as(gateway.url, cli["AccessKeyId"], cli["SecretAccessKey"],
                   token=None).get_caller_identity()
    assert user["Arn"] == "arn:aws:iam::123456789012:user/annex-admin"


def test_moto_alone_does_not_know_the_role_key(aws, moto_endpoint, seed_role):
    # Why the rule exists.
    me = _sts_as(moto_endpoint, role_access_key(ROLE)).get_caller_identity()
    assert me["Arn"] == "arn:aws:sts::123456789012:user/moto"


def test_an_unregistered_key_goes_to_moto_and_a_deleted_roles_key_is_refused(aws, gateway,
                                                                            seed_role):
    assert _sts_as(gateway.url, "ASIAUNREGISTERED").get_caller_identity()["Arn"].endswith(
        ":user/moto")
    gateway.register_role_key("ASIAGONE", "deleted-role")
    with pytest.raises(ClientError) as e:
        _sts_as(gateway.url, "ASIAGONE").get_caller_identity()
    assert e.value.response["Error"]["Code"] == "InvalidClientTokenId"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
