"""Bake the bootstrap's install step into an AMI: ``condor_annex image build``.

One builder instance boots a stock image with the *build* bootstrap (install HTCondor, python3-boto3
and iptables, fetch the agent, install its unit; then power off — see
:func:`condor_annex.providers.aws.bootstrap.render_build`).  Once it has stopped, EC2 CreateImage
makes the prepared image, tagged ``htcondor:AnnexImage=<package version>``
(:data:`~condor_annex.model.TAG_ANNEX_IMAGE`), which is how ``create`` knows it may skip the
install step.  The builder is terminated whatever happens, so a failed build leaves no instance.

AWS pages followed: API_RunInstances (``InstanceInitiatedShutdownBehavior=stop``: a builder that
powers itself off stops, and a stopped instance's volume is consistent), API_CreateImage,
API_DescribeImages (``State`` ``pending`` → ``available`` | ``failed``), API_GetConsoleOutput
(the builder's failure line), API_TerminateInstances.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from condor_annex.config import AwsSettings
from condor_annex.errors import ProviderError
from condor_annex.model import TAG_ANNEX_IMAGE, TAG_LAUNCH_TOKEN, SetupOutputs
from condor_annex.providers.aws.bootstrap import BUILD_FAILED_LINE
from condor_annex.providers.aws.errors import aws_errors
from condor_annex.providers.aws.instance_settings import METADATA_OPTIONS
from condor_annex.providers.aws.session import make_client
from condor_annex.providers.aws.single_launch import launch_one

#: Tag on the builder instance (value: the package version); lets anyone find a stray builder.
TAG_IMAGE_BUILDER = "htcondor:ImageBuilder"
#: Tag on the built image naming the stock image it was built from (its AMI id).
TAG_IMAGE_SOURCE = "htcondor:AnnexImageSource"


@dataclass(frozen=True)
class BuiltImage:
    """A prepared image made by :func:`build_image`.

    Attributes:
        image_id: the new AMI.
        name: its name, ``condor-annex-<version>-<source name>-<UTC timestamp>``.
        source_image_id: the stock image the builder booted.
        builder_instance_id: the (now terminated) builder.
        build_s: seconds from the builder's launch to the image being available.
    """

    image_id: str
    name: str
    source_image_id: str
    builder_instance_id: str
    build_s: float


def build_image(settings: AwsSettings, outputs: SetupOutputs, *, source_image_id: str,
                source_name: str, instance_type: str, user_data: str, version: str,
                subnet_id: str = "", progress: Callable[[str, float], None] | None = None,
                notify: Callable[[str], None] | None = None,
                timeout_s: float = 1800.0, poll_s: float = 5.0,
                clock: Callable[[], float] = time.monotonic) -> BuiltImage:
    """Launch a builder from ``source_image_id``, wait for it to stop, image it, terminate it.

    Args:
        settings: where AWS is.
        outputs: setup's outputs (the builder runs with setup's instance profile, which may read
            the agent from the bucket, and setup's security group).
        source_image_id: the stock image (e.g. the resolved ``debian-13``).
        source_name: its short name, used in the image name (e.g. ``"debian-13"``).
        instance_type: the builder's type (its architecture is the image's).
        user_data: the build bootstrap (plain text; base64 is boto3's job).
        version: the package version, the value of ``htcondor:AnnexImage``.
        subnet_id: the builder's subnet ("" for the default VPC's).
        progress: called with a phase (``"booting"``, ``"imaging"``) and the seconds elapsed,
            about every ``poll_s`` seconds.
        notify: called with one line per launch retry (see ``launch_with_retries``).
        timeout_s: give up (and terminate the builder) after this many seconds.
        poll_s: seconds between DescribeInstances / DescribeImages polls.
        clock: monotonic seconds (tests may pass their own).

    Returns:
        The built image.

    Raises:
        ProviderError: the builder failed (its console's failure line is in the message),
            ended, or did not stop within ``timeout_s``; CreateImage failed or the image
            became ``failed``.  The builder is terminated before any of these is raised.
    """
    ec2 = make_client(settings, "ec2")
    started = clock()
    say = progress or (lambda phase, elapsed: None)
    token = f"image-build_{uuid.uuid4()}"
    params: dict[str, Any] = {
        "ImageId": source_image_id, "InstanceType": instance_type,
        "MinCount": 1, "MaxCount": 1, "UserData": user_data, "ClientToken": token,
        "IamInstanceProfile": {"Arn": outputs.instance_profile_arn},
        "InstanceInitiatedShutdownBehavior": "stop",
        "MetadataOptions": dict(METADATA_OPTIONS),
        "TagSpecifications": [{"ResourceType": "instance", "Tags": [
            {"Key": "Name", "Value": f"condor-annex image builder {version}"},
            {"Key": TAG_IMAGE_BUILDER, "Value": version},
            {"Key": TAG_LAUNCH_TOKEN, "Value": token}]}],
    }
    if outputs.security_group_id:
        params["SecurityGroupIds"] = [outputs.security_group_id]
    if subnet_id:
        params["SubnetId"] = subnet_id

    # The same retries as create's launches (throttling, 5xx, a lost reply, a setup
    # instance profile EC2 does not know yet).
    builder = launch_one(settings, params, notify=notify)
    try:
        _wait_stopped(ec2, builder, started, timeout_s, poll_s, clock, say)
        name = f"condor-annex-{version}-{source_name}-" \
               f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"
        with aws_errors("ec2.CreateImage"):
            image_id = ec2.create_image(
                InstanceId=builder, Name=name,
                Description=f"condor-annex {version} prepared image from {source_name} "
                            f"({source_image_id})",
                TagSpecifications=[{"ResourceType": "image", "Tags": [
                    {"Key": TAG_ANNEX_IMAGE, "Value": version},
                    {"Key": TAG_IMAGE_SOURCE, "Value": source_image_id}]}])["ImageId"]
        _wait_available(ec2, image_id, started, timeout_s, poll_s, clock, say)
    finally:
        with aws_errors("ec2.TerminateInstances"):
            ec2.terminate_instances(InstanceIds=[builder])
    return BuiltImage(image_id=image_id, name=name, source_image_id=source_image_id,
                      builder_instance_id=builder, build_s=clock() - started)


def _wait_stopped(ec2: Any, builder: str, started: float, timeout_s: float, poll_s: float,
                  clock: Callable[[], float], say: Callable[[str, float], None]) -> None:
    """Poll until the builder is ``stopped``; fail early on its console's failure line."""
    while True:
        elapsed = clock() - started
        say("booting", elapsed)
        with aws_errors("ec2.DescribeInstances"):
            found = [i for r in ec2.describe_instances(InstanceIds=[builder])["Reservations"]
                     for i in r["Instances"]]
        state = found[0]["State"]["Name"] if found else "unknown"
        if state == "stopped":
            return
        if state in ("shutting-down", "terminated"):
            raise ProviderError(f"image build: the builder {builder} ended ({state}) before "
                                f"the image was made; see 'condor_annex logs' output above")
        console = console_text(ec2, builder)
        if BUILD_FAILED_LINE in console:
            tail = [ln for ln in console.splitlines() if ln.startswith("condor-annex:")][-3:]
            raise ProviderError(f"image build: the builder {builder} failed: "
                                + " | ".join(tail))
        if elapsed > timeout_s:
            raise ProviderError(f"image build: the builder {builder} did not finish within "
                                f"{timeout_s:g} s (state {state}); its console shows: "
                                + " | ".join(console.strip().splitlines()[-3:]))
        time.sleep(poll_s)


def _wait_available(ec2: Any, image_id: str, started: float, timeout_s: float, poll_s: float,
                    clock: Callable[[], float], say: Callable[[str, float], None]) -> None:
    """Poll DescribeImages until the image is ``available``."""
    while True:
        elapsed = clock() - started
        say("imaging", elapsed)
        with aws_errors("ec2.DescribeImages"):
            images = ec2.describe_images(ImageIds=[image_id])["Images"]
        state = images[0].get("State", "pending") if images else "pending"
        if state == "available":
            return
        if state in ("failed", "invalid", "deregistered", "error"):
            reason = (images[0].get("StateReason") or {}).get("Message", "") if images else ""
            raise ProviderError(f"image build: CreateImage made {image_id}, which is {state}"
                                + (f": {reason}" if reason else ""))
        if elapsed > timeout_s:
            raise ProviderError(f"image build: {image_id} not available within {timeout_s:g} s")
        time.sleep(poll_s)


def console_text(ec2: Any, instance_id: str) -> str:
    """The instance's console output (EC2 GetConsoleOutput, base64-decoded; "" when none yet).

    Raises:
        ProviderError: the call failed (other than the output being absent)."""
    with aws_errors("ec2.GetConsoleOutput"):
        out = ec2.get_console_output(InstanceId=instance_id).get("Output") or ""
    try:
        return base64.b64decode(out).decode("utf-8", "replace")
    except ValueError:
        return out
