"""The local cloud's account as a new AWS account looks to a user of ``docs/aws.md``.

moto starts with no IAM user behind its credentials (``GetCallerIdentity`` names ``user/moto``,
which IAM does not know) and with a default VPC whose main route table has no route out.  On AWS:

* The user following ``docs/aws.md`` runs ``condor_annex`` as an IAM user with the shipped
  least-privilege policy attached (step 1 of the guide).  :func:`prepare_account` makes that user,
  ``condor-annex-local``, attaches the shipped policy as a customer managed policy and returns a
  fresh access key, which the local cloud writes to its key files: ``GetCallerIdentity`` then
  names that user, and ``check-setup --preflight``'s permission row simulates that user's own
  policies (moto does not enforce IAM; the simulation is answered by ``strict_simulate``).
* A default VPC has "an internet gateway attached" and "a route in the main route table that
  points all traffic (0.0.0.0/0) to the internet gateway"
  (docs.aws.amazon.com/vpc/latest/userguide/default-vpc.html, "Default VPC components").
  :func:`prepare_account` adds both to moto's default VPC.
"""

from __future__ import annotations

import json
from typing import Any

#: The IAM user the local cloud's CLI runs as (docs/aws.md step 1), and its policy's name.
LOCAL_USER = "condor-annex-local"
LOCAL_POLICY = "condor-annex-user"


def prepare_account(iam: Any, ec2: Any) -> tuple[str, str]:
    """Make the guide's IAM user with the shipped policy, and give the default VPC its route out.

    Args:
        iam, ec2: boto3 clients straight to moto (moto's own credentials).

    Returns:
        ``(access_key_id, secret_access_key)`` of the new user (fake: moto's account).

    Raises:
        botocore.exceptions.ClientError: moto refused a call (a bug in the local cloud).
    """
    from condor_annex.providers.aws import policy

    iam.create_user(UserName=LOCAL_USER)
    arn = iam.create_policy(PolicyName=LOCAL_POLICY,
                            PolicyDocument=json.dumps(policy.load()))["Policy"]["Arn"]
    iam.attach_user_policy(UserName=LOCAL_USER, PolicyArn=arn)
    key = iam.create_access_key(UserName=LOCAL_USER)["AccessKey"]
    route_default_vpc_out(ec2)
    return key["AccessKeyId"], key["SecretAccessKey"]


def route_default_vpc_out(ec2: Any) -> None:
    """Attach an internet gateway to the default VPC and route 0.0.0.0/0 of its main route table
    to it, as AWS's default VPC has (no-op when the route is already there)."""
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        return
    vpc = vpcs[0]["VpcId"]
    tables = ec2.describe_route_tables(Filters=[
        {"Name": "vpc-id", "Values": [vpc]},
        {"Name": "association.main", "Values": ["true"]}])["RouteTables"]
    if not tables:
        return
    if any(r.get("DestinationCidrBlock") == "0.0.0.0/0" for r in tables[0].get("Routes", [])):
        return
    igws = ec2.describe_internet_gateways(Filters=[
        {"Name": "attachment.vpc-id", "Values": [vpc]}])["InternetGateways"]
    if igws:
        igw = igws[0]["InternetGatewayId"]
    else:
        igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
        ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    ec2.create_route(RouteTableId=tables[0]["RouteTableId"], DestinationCidrBlock="0.0.0.0/0",
                     GatewayId=igw)
