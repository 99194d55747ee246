"""Fixtures for the AWS provider tests: a set-up account on the moto server, and helpers."""

from __future__ import annotations

import pytest

#: An AMI moto knows (its bundled Amazon images); the same as the ``account`` fixture's.
MOTO_AMI = "ami-03cf127a"


@pytest.fixture
def provider(aws, outputs):
    """An :class:`AwsProvider` for the set-up account."""
    from condor_annex.providers.aws.provider import AwsProvider

    return AwsProvider(aws, outputs)


@pytest.fixture
def ec2(aws):
    """A plain EC2 client for inspecting what our code did (not for asserting moto's echo)."""
    from condor_annex.providers.aws.session import make_client

    return make_client(aws, "ec2")


@pytest.fixture
def launch_request(outputs):
    """Make a LaunchRequest for an annex with setup's profile, security group and key pair."""
    from condor_annex.model import LaunchRequest, new_client_token

    def make(annex: str, count: int = 1, **kw):
        fields = dict(annex_name=annex, client_token=new_client_token(annex), count=count,
                      instance_type="m4.large", image_id=MOTO_AMI,
                      instance_profile_arn=outputs.instance_profile_arn,
                      security_group_ids=(outputs.security_group_id,), key_name=outputs.key_name)
        fields.update(kw)
        return LaunchRequest(**fields)

    return make
