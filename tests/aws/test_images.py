"""Images by name through public SSM parameters, the precedence, prepared images, and the
agent the bucket must hold (:mod:`condor_annex.providers.aws.images`,
:mod:`condor_annex.service.launch_image`), against the moto server behind the gateway (whose
strict SSM rule publishes Debian's parameter, as the local cloud does)."""

from __future__ import annotations

import dataclasses

import pytest

from condor_annex.config import AwsSettings
from condor_annex.errors import BadInputError
from condor_annex.model import TAG_ANNEX_IMAGE, AnnexSpec
from condor_annex.providers.aws.images import resolve_image
from condor_annex.providers.aws.session import make_client
from condor_annex.providers.local.strict_ssm import PublicParameters

MOTO_AMI = "ami-03cf127a"
DEBIAN_AMD64 = "/aws/service/debian/release/13/latest/amd64"


@pytest.fixture
def cloud(aws, gateway):
    """Settings through the gateway, with a registered 'stock image' published as debian-13."""
    settings = dataclasses.replace(aws, endpoint_url=gateway.url) \
        if dataclasses.is_dataclass(aws) else AwsSettings(**{**aws.__dict__,
                                                              "endpoint_url": gateway.url})
    ec2 = make_client(settings, "ec2")
    stock = ec2.register_image(Name="debian-13-amd64-test", Architecture="x86_64",
                               RootDeviceName="/dev/xvda")["ImageId"]
    gateway.rule(PublicParameters).publish(DEBIAN_AMD64, stock)
    return settings, stock


def test_default_is_debian_13_through_its_public_parameter(cloud):
    settings, stock = cloud
    got = resolve_image(settings, instance_type="m4.large")
    assert (got.image_id, got.name, got.distribution, got.source, got.prepared) == \
        (stock, "debian-13", "debian", "default", False)


def test_precedence_image_id_then_name_then_knob(cloud):
    settings, stock = cloud
    assert resolve_image(settings, instance_type="m4.large", image_id=MOTO_AMI,
                         name="debian-13", default_image_id=stock).image_id == MOTO_AMI
    assert resolve_image(settings, instance_type="m4.large", name="debian-13",
                         default_image_id=MOTO_AMI).image_id == stock
    got = resolve_image(settings, instance_type="m4.large", default_image_id=MOTO_AMI)
    assert (got.image_id, got.source) == (MOTO_AMI, "ANNEX_DEFAULT_ODI_IMAGE_ID")


def test_prepared_image_is_recognised_by_its_tag(cloud):
    settings, _ = cloud
    ec2 = make_client(settings, "ec2")
    baked = ec2.register_image(Name="annex-baked", Architecture="x86_64",
                               RootDeviceName="/dev/xvda")["ImageId"]
    ec2.create_tags(Resources=[baked], Tags=[{"Key": TAG_ANNEX_IMAGE, "Value": "0.1.0"}])
    got = resolve_image(settings, instance_type="m4.large", image_id=baked)
    assert (got.prepared, got.prepared_version) == (True, "0.1.0")


def test_name_without_a_parameter_and_arch_mismatch_name_the_flag(cloud):
    settings, _ = cloud
    with pytest.raises(BadInputError, match=r"^--image: image ubuntu-24.04 has no public "
                                            r"parameter /aws/service/canonical/ubuntu/server/"
                                            r"24.04/stable/current/amd64/hvm/ebs-gp3/ami-id"):
        resolve_image(settings, instance_type="m4.large", name="ubuntu-24.04")
    with pytest.raises(BadInputError, match=r"^-aws-on-demand-ami-id: AMI ami-03cf127a is "
                                            r"x86_64 but instance type m6g.large runs arm64"):
        resolve_image(settings, instance_type="m6g.large", image_id=MOTO_AMI,
                      image_id_flag="-aws-on-demand-ami-id")
    with pytest.raises(BadInputError, match=r"^--image: no image named 'centos'; the names "
                                            r"are debian-13, ubuntu-24.04, al2023"):
        resolve_image(settings, instance_type="m4.large", name="centos")


def test_create_refuses_a_bucket_without_the_agent_and_creates_nothing(account, outputs):
    from condor_annex import config
    from condor_annex.providers.aws.agent_package import agent_key
    from condor_annex.service.create import create_annex
    from condor_annex.service.context import Context

    config.write_block("setup", config.setup_knobs(outputs))
    ctx = Context.load()
    s3 = make_client(ctx.aws, "s3")
    s3.delete_object(Bucket=outputs.bucket, Key=agent_key())
    with pytest.raises(BadInputError) as e:
        create_annex(ctx, AnnexSpec(name="noagent", count=1))
    assert str(e.value) == (f"setup: bucket {outputs.bucket} has no agent {agent_key()} (a "
                            "setup from another version); run 'condor_annex setup'")
    ec2 = make_client(ctx.aws, "ec2")
    assert not [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert not make_client(ctx.aws, "scheduler").list_schedules()["Schedules"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=outputs.bucket).get("Contents", [])] \
        == []


def test_setup_uploads_the_agent_once_and_again_when_it_differs(aws, outputs):
    from condor_annex.providers.aws.agent_package import (agent_key, agent_status,
                                                          build_agent_zipapp, upload_agent)
    assert build_agent_zipapp() == build_agent_zipapp()       # deterministic bytes
    assert agent_status(aws, outputs.bucket) is None          # setup put it there
    assert upload_agent(aws, outputs.bucket) is False         # same bytes: no upload
    make_client(aws, "s3").put_object(Bucket=outputs.bucket, Key=agent_key(), Body=b"old")
    assert "differs" in agent_status(aws, outputs.bucket)
    assert upload_agent(aws, outputs.bucket) is True
    assert agent_status(aws, outputs.bucket) is None
