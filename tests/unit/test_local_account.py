"""The local cloud's account looks like a new AWS account set up by docs/aws.md step 1: the CLI
runs as an IAM user holding the shipped policy, and the default VPC routes out through an
internet gateway (providers/local/account.py)."""

from __future__ import annotations

from condor_annex.config import AwsSettings
from condor_annex.providers.aws import policy as shipped
from condor_annex.providers.aws.session import make_client
from condor_annex.providers.local.account import (LOCAL_USER, prepare_account,
                                                  route_default_vpc_out)
from condor_annex.service.context import Context
from condor_annex.service.preflight import _permissions, _subnet_route


def _as_user(aws: AwsSettings, endpoint: str, key: tuple[str, str]) -> AwsSettings:
    for path, value in zip((aws.access_key_file, aws.secret_key_file), key):
        with open(path, "w") as f:
            f.write(value + "\n")
    return AwsSettings(region=aws.region, endpoint_url=endpoint,
                       access_key_file=aws.access_key_file, secret_key_file=aws.secret_key_file)


def test_the_cli_runs_as_the_guides_user_and_preflight_rows_pass(aws, gateway):
    key = prepare_account(make_client(aws, "iam"), make_client(aws, "ec2"))
    ctx = Context(aws=_as_user(aws, gateway.url, key))
    me = make_client(ctx.aws, "sts").get_caller_identity()
    assert me["Arn"].endswith(f":user/{LOCAL_USER}")
    # The permission row simulates this user's own attached policy (the shipped one).
    assert f"user/{LOCAL_USER}: all {len(shipped.actions(shipped.load()))}" in \
        _permissions(ctx, shipped.load())
    assert "0.0.0.0/0 via igw-" in _subnet_route(ctx)


def test_route_out_is_added_once(aws):
    ec2 = make_client(aws, "ec2")
    route_default_vpc_out(ec2)
    route_default_vpc_out(ec2)
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]
    table = ec2.describe_route_tables(Filters=[
        {"Name": "vpc-id", "Values": [vpc["VpcId"]]},
        {"Name": "association.main", "Values": ["true"]}])["RouteTables"][0]
    outs = [r for r in table["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
    assert len(outs) == 1 and outs[0]["GatewayId"].startswith("igw-")
    assert len(ec2.describe_internet_gateways(Filters=[
        {"Name": "attachment.vpc-id", "Values": [vpc["VpcId"]]}])["InternetGateways"]) == 1
