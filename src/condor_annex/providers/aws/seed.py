"""The seed instance in EC2: launch it, find it, read its console, terminate it.

A seed is one **on-demand** instance (never spot: HTCondor's seed page says the central manager
must not be interrupted) tagged :data:`TAG_SEED` (value: the package version), running with
setup's seed instance profile.  One seed per region: :func:`find_seeds` is how ``seed create``
refuses a second and how ``seed status`` / ``seed off`` find it.

AWS pages followed: API_RunInstances (``ClientToken`` for an idempotent retry, ``MetadataOptions``
IMDSv2 only, ``InstanceInitiatedShutdownBehavior`` stop: a seed that powers itself off keeps its
pool's state), API_DescribeInstances (``tag-key`` filter), API_GetConsoleOutput (``Latest``),
API_TerminateInstances.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from condor_annex.config import AwsSettings
from condor_annex.errors import ProviderError
from condor_annex.model import TAG_LAUNCH_TOKEN
from condor_annex.providers.aws.errors import aws_errors
from condor_annex.providers.aws.image_builder import console_text
from condor_annex.providers.aws.instance_settings import METADATA_OPTIONS
from condor_annex.providers.aws.session import make_client
from condor_annex.providers.aws.single_launch import launch_one

#: Tag on the seed instance (value: the package version that made it).
TAG_SEED = "htcondor:Seed"
#: EC2 states of a seed that still exists (a terminated one is gone for good).
ALIVE_STATES = ("pending", "running", "stopping", "stopped", "shutting-down")


@dataclass(frozen=True)
class SeedInstance:
    """One seed as EC2 describes it.

    Attributes:
        instance_id: ``i-...``.
        state: EC2 state name (``pending``, ``running``...).
        instance_type: e.g. ``m5.large``.
        image_id: the AMI it booted.
        private_ip: private IPv4, or "".
        public_ip: public IPv4, or "" (none).
        launch_time: when EC2 launched it (aware UTC), or None.
        version: tag :data:`TAG_SEED` (the package version that made it).
    """

    instance_id: str
    state: str
    instance_type: str
    image_id: str
    private_ip: str
    public_ip: str
    launch_time: datetime | None
    version: str


def _seed(i: dict) -> SeedInstance:
    tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
    return SeedInstance(i["InstanceId"], i["State"]["Name"], i.get("InstanceType", ""),
                        i.get("ImageId", ""), i.get("PrivateIpAddress", ""),
                        i.get("PublicIpAddress", ""), i.get("LaunchTime"),
                        tags.get(TAG_SEED, ""))


def find_seeds(settings: AwsSettings, *, alive_only: bool = True) -> list[SeedInstance]:
    """The seeds of the region (EC2 DescribeInstances, filter ``tag-key`` :data:`TAG_SEED`),
    by launch time; with ``alive_only``, only those in :data:`ALIVE_STATES`.

    Raises:
        ProviderError: the call failed.
    """
    ec2 = make_client(settings, "ec2")
    filters: list[dict[str, Any]] = [{"Name": "tag-key", "Values": [TAG_SEED]}]
    if alive_only:
        filters.append({"Name": "instance-state-name", "Values": list(ALIVE_STATES)})
    seeds: list[SeedInstance] = []
    with aws_errors("ec2.DescribeInstances"):
        for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
            for r in page["Reservations"]:
                seeds.extend(_seed(i) for i in r["Instances"])
    return sorted(seeds, key=lambda s: (s.launch_time is None, s.launch_time, s.instance_id))


def describe_seed(settings: AwsSettings, instance_id: str) -> SeedInstance | None:
    """One seed by id, or None when EC2 does not list it."""
    ec2 = make_client(settings, "ec2")
    with aws_errors("ec2.DescribeInstances"):
        found = [i for r in ec2.describe_instances(Filters=[
            {"Name": "instance-id", "Values": [instance_id]}])["Reservations"]
            for i in r["Instances"]]
    return _seed(found[0]) if found else None


def launch_seed(settings: AwsSettings, *, image_id: str, instance_type: str,
                user_data: str | bytes,
                instance_profile_arn: str, security_group_ids: list[str], version: str,
                subnet_id: str = "", notify: Callable[[str], None] | None = None) -> str:
    """Launch the seed: one on-demand instance (EC2 RunInstances, never a Spot request).

    Args:
        image_id: the AMI (a stock image; its cloud-init runs ``user_data``).
        instance_type: e.g. ``m5.large``.
        user_data: the seed's user data (text or gzip bytes; base64 is boto3's job).
        instance_profile_arn: setup's seed instance profile.
        security_group_ids: setup's seed security group (and any others).
        version: the package version, the value of :data:`TAG_SEED`.
        subnet_id: "" for the default VPC's.
        notify: one line per launch retry.

    Returns:
        the seed's instance id.

    Raises:
        ProviderError: the launch failed after the retries (capacity, quota, a bad profile).
    """
    token = f"seed_{uuid.uuid4()}"
    params: dict[str, Any] = {
        "ImageId": image_id, "InstanceType": instance_type, "MinCount": 1, "MaxCount": 1,
        "UserData": user_data, "ClientToken": token,
        "IamInstanceProfile": {"Arn": instance_profile_arn},
        "InstanceInitiatedShutdownBehavior": "stop",
        "MetadataOptions": dict(METADATA_OPTIONS),
        "TagSpecifications": [{"ResourceType": "instance", "Tags": [
            {"Key": "Name", "Value": "condor-annex seed"},
            {"Key": TAG_SEED, "Value": version},
            {"Key": TAG_LAUNCH_TOKEN, "Value": token}]}],
    }
    if security_group_ids:
        params["SecurityGroupIds"] = list(security_group_ids)
    if subnet_id:
        params["SubnetId"] = subnet_id

    return launch_one(settings, params, notify=notify)


def console(settings: AwsSettings, instance_id: str) -> str:
    """The seed's console text (EC2 GetConsoleOutput, latest), "" when there is none yet."""
    return console_text(make_client(settings, "ec2"), instance_id)


def terminate_seed(settings: AwsSettings, instance_id: str, *, timeout_s: float = 300.0,
                   poll_s: float = 2.0, progress: Callable[[str, float], None] | None = None,
                   clock: Callable[[], float] = time.monotonic) -> None:
    """Terminate the seed and wait until EC2 says ``terminated``.

    Raises:
        ProviderError: a call failed, or not terminated within ``timeout_s`` seconds.
    """
    ec2 = make_client(settings, "ec2")
    with aws_errors("ec2.TerminateInstances"):
        ec2.terminate_instances(InstanceIds=[instance_id])
    started = clock()
    while True:
        seed = describe_seed(settings, instance_id)
        state = seed.state if seed else "terminated"
        if progress:
            progress(state, clock() - started)
        if state == "terminated":
            return
        if clock() - started > timeout_s:
            raise ProviderError(f"seed {instance_id} is still {state} {timeout_s:g} s after "
                                "TerminateInstances; see the EC2 console")
        time.sleep(poll_s)
