"""The local cloud publishes the distributions' public SSM parameters
(:mod:`condor_annex.providers.local.strict_ssm`); moto alone knows only Amazon Linux's."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError

from condor_annex.providers.local.strict_ssm import PublicParameters

DEBIAN = "/aws/service/debian/release/13/latest/amd64"
DEBIAN_ARM = "/aws/service/debian/release/13/latest/arm64"
AL2023 = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"


@pytest.fixture
def ssm(gateway):
    return boto3.client("ssm", endpoint_url=gateway.url, region_name="eu-west-1")


def test_published_name_resolves_and_moto_still_answers_the_rest(gateway, ssm):
    with pytest.raises(ClientError) as e:       # not published yet: moto's answer
        ssm.get_parameter(Name=DEBIAN)
    assert e.value.response["Error"]["Code"] == "ParameterNotFound"
    rule = gateway.rule(PublicParameters)
    rule.publish(DEBIAN, "ami-0000000000000d13a")
    rule.publish(DEBIAN_ARM, "ami-0000000000000d13b")
    p = ssm.get_parameter(Name=DEBIAN)["Parameter"]
    assert (p["Value"], p["Type"]) == ("ami-0000000000000d13a", "String")
    assert p["ARN"] == f"arn:aws:ssm:eu-west-1::parameter{DEBIAN}"
    got = ssm.get_parameters(Names=[DEBIAN, AL2023, "/nope/x"])
    values = {q["Name"]: q["Value"] for q in got["Parameters"]}
    assert values[DEBIAN] == "ami-0000000000000d13a"
    assert values[AL2023].startswith("ami-")          # moto's own Amazon Linux parameter
    assert got["InvalidParameters"] == ["/nope/x"]
    listed = ssm.get_parameters_by_path(Path="/aws/service/debian/release/13/latest")
    assert {q["Name"] for q in listed["Parameters"]} == {DEBIAN, DEBIAN_ARM}
    # not recursive: the direct children of /release only (none)
    assert ssm.get_parameters_by_path(Path="/aws/service/debian/release")["Parameters"] == []
    paged = ssm.get_parameters_by_path(Path="/aws/service/debian", Recursive=True, MaxResults=1)
    assert len(paged["Parameters"]) == 1 and paged["NextToken"]
    rule.unpublish(DEBIAN)
    with pytest.raises(ClientError):
        ssm.get_parameter(Name=DEBIAN)
