"""One instance launched by RunInstances with the safe retries of
:func:`~condor_annex.providers.aws.launch_retry.launch_with_retries`: the image builder's and
the seed's launches (an annex's go through the provider's fleet code).

The request must carry a ``ClientToken`` and the tag ``htcondor:LaunchToken`` with the same
value on the instance (:data:`~condor_annex.model.TAG_LAUNCH_TOKEN`): a resend keeps the token
(EC2 treats it as the same request, "Ensuring idempotency in Amazon EC2 API requests"), and
before each resend the tag tells whether an earlier attempt launched it after all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from condor_annex.config import AwsSettings
from condor_annex.model import TAG_LAUNCH_TOKEN
from condor_annex.providers.aws.errors import aws_errors
from condor_annex.providers.aws.launch_retry import launch_with_retries
from condor_annex.providers.aws.session import make_client


def launch_one(settings: AwsSettings, params: dict[str, Any], *,
               notify: Callable[[str], None] | None = None) -> str:
    """EC2 RunInstances of exactly one instance (``MinCount`` = ``MaxCount`` = 1 in
    ``params``), retried safely; returns its instance id.

    Raises:
        ValueError: ``params`` has no ``ClientToken`` (a programming error).
        ProviderError: the launch failed after the retries (capacity, quota, a bad profile).
    """
    token = params.get("ClientToken")
    if not token:
        raise ValueError("launch_one: the request needs a ClientToken")
    ec2 = make_client(settings, "ec2")
    launcher = make_client(settings, "ec2", fast_fail=True)   # launch_with_retries retries

    def send() -> str:
        with aws_errors("ec2.RunInstances"):
            return launcher.run_instances(**params)["Instances"][0]["InstanceId"]

    def find() -> str | None:
        with aws_errors("ec2.DescribeInstances"):
            found = [i["InstanceId"] for r in ec2.describe_instances(Filters=[
                {"Name": f"tag:{TAG_LAUNCH_TOKEN}", "Values": [token]}])["Reservations"]
                for i in r["Instances"]]
        return found[0] if found else None

    # As create's launches: throttling, 5xx, a lost reply, and an instance profile that EC2
    # does not know yet (IAM is eventually consistent).
    return launch_with_retries(send, find, what="ec2.RunInstances", notify=notify)
