"""Who this instance is and which annex it serves: boot steps 1, 3 and 4.

* identity (step 1): instance id, region and address from IMDSv2, checked, since they go into
  HTCondor's config;
* annex name (step 3): the exact tag ``htcondor:AnnexName`` (instance metadata, else EC2
  DescribeTags), never the client token cut at its first ``_`` as the original did;
* config bucket (step 4): the instance's tag ``htcondor:ConfigBucket`` (metadata), else that
  tag on the instance profile's role (IAM GetInstanceProfile, ListRoleTags), instead of
  grepping IAM policies.

Standard library only at import time (the agent runs on the instance's python3, 3.11+).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from dataclasses import dataclass

from condor_annex.agent.clients import AwsClients
from condor_annex.agent.errors import BootstrapError, NotYet
from condor_annex.agent.imds import ImdsClient, ImdsError
from condor_annex.agent.retry import SOON, TAG_VISIBILITY_WAIT_S, aws_call, retry

log = logging.getLogger(__name__)

# Same values as condor_annex.model (not imported: the agent stands alone on the instance).
TAG_ANNEX_NAME = "htcondor:AnnexName"
TAG_CONFIG_BUCKET = "htcondor:ConfigBucket"

_INSTANCE_ID_RE = re.compile(r"i-[0-9A-Za-z]{1,32}", re.ASCII)


@dataclass(frozen=True)
class Identity:
    """Who this instance is, from IMDS.

    Attributes:
        instance_id: e.g. ``"i-0abc..."``.
        region: e.g. ``"us-east-1"``.
        public_ip: the public IPv4 address, else the private one.
    """

    instance_id: str
    region: str
    public_ip: str


def read_identity(imds: ImdsClient) -> Identity:
    """Step 1: instance id, region and public (else private) IPv4 address from IMDS.

    Raises:
        ImdsError: when IMDS fails (403 fails at once).
        BootstrapError: when an answer is not what EC2 serves (values go into HTCondor config).
    """
    instance_id, region, address = imds.instance_id(), imds.region(), imds.public_ipv4()
    # fullmatch: "$" after re.match would accept a trailing newline into the config.
    if not _INSTANCE_ID_RE.fullmatch(instance_id):
        raise BootstrapError(f"IMDS instance-id {instance_id!r} is not an EC2 instance id")
    if not re.fullmatch(r"[a-z0-9-]{1,40}", region, re.ASCII):
        raise BootstrapError(f"IMDS placement/region {region!r} is not a region name")
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise BootstrapError(f"IMDS public-ipv4/local-ipv4 {address!r} is not an IPv4 "
                             "address") from None
    return Identity(instance_id, region, address)


def discover_annex_name(imds: ImdsClient, clients: AwsClients, instance_id: str,
                        deadline: float) -> tuple[str, str]:
    """Step 3: the exact value of tag ``htcondor:AnnexName``, and where it came from.

    Instance metadata tags first (enabled at launch); else EC2 DescribeTags on this instance,
    retried for up to :data:`~condor_annex.agent.retry.TAG_VISIBILITY_WAIT_S` (EC2 is
    eventually consistent).

    Args:
        deadline: monotonic time after which nothing is retried.

    Returns:
        (annex name, ``"instance metadata"`` or ``"EC2 DescribeTags"``).

    Raises:
        BootstrapError: no such tag.
    """
    name = imds.tag(TAG_ANNEX_NAME)
    if name:
        return name, "instance metadata"
    log.info("tag %s is not in instance metadata; asking EC2 DescribeTags", TAG_ANNEX_NAME)

    def attempt() -> str:
        answer = aws_call(lambda: clients.ec2.describe_tags(Filters=[
            {"Name": "resource-id", "Values": [instance_id]},
            {"Name": "key", "Values": [TAG_ANNEX_NAME]},
        ]))
        for tag in answer.get("Tags", []):
            if tag.get("ResourceId") == instance_id and tag.get("Key") == TAG_ANNEX_NAME \
                    and tag.get("Value"):
                return str(tag["Value"])
        raise NotYet(f"instance {instance_id} has no tag {TAG_ANNEX_NAME}")

    name = retry("annex name", attempt, deadline,
                 min(deadline, time.monotonic() + TAG_VISIBILITY_WAIT_S), **SOON)
    return name, "EC2 DescribeTags"


def metadata_tag(imds: ImdsClient, key: str) -> str | None:
    """Instance tag ``key`` from IMDS, stripped, or None (tags in metadata off, no such tag,
    or IMDS failing: the caller has a fallback)."""
    try:
        value = imds.tag(key)
    except ImdsError as exc:
        log.debug("IMDS tag %s: %s", key, exc)
        return None
    return value.strip() if value and value.strip() else None


def discover_bucket(imds: ImdsClient, clients: AwsClients, deadline: float) -> str:
    """Step 4 (fallback): tag ``htcondor:ConfigBucket`` of the role in this instance's
    instance profile (IMDS ``iam/info``, IAM GetInstanceProfile, IAM ListRoleTags).

    Args:
        deadline: monotonic time after which nothing is retried.

    Raises:
        BootstrapError: no instance profile, no role, or no such tag.
    """
    arn = imds.instance_profile_arn()
    if not arn:
        raise BootstrapError("the instance has no instance profile (IMDS iam/info is 404); "
                             "launch it with the annex instance profile or pass --bucket")
    profile_name = arn.rsplit("/", 1)[-1]

    def attempt() -> str:
        answer = aws_call(lambda: clients.iam.get_instance_profile(
            InstanceProfileName=profile_name))
        roles = answer.get("InstanceProfile", {}).get("Roles") or []
        if not roles:
            raise NotYet(f"instance profile {profile_name} has no role")
        role = roles[0]["RoleName"]
        tags = _role_tags(clients, role)
        if not tags.get(TAG_CONFIG_BUCKET):
            raise NotYet(f"role {role} has no tag {TAG_CONFIG_BUCKET}")
        return tags[TAG_CONFIG_BUCKET]

    return retry("config bucket", attempt, deadline,
                 min(deadline, time.monotonic() + TAG_VISIBILITY_WAIT_S), **SOON)


def _role_tags(clients: AwsClients, role: str) -> dict[str, str]:
    """All tags of an IAM role (IAM ListRoleTags, every page)."""
    tags: dict[str, str] = {}
    kwargs: dict[str, str] = {"RoleName": role}
    for _page in range(100):
        answer = aws_call(lambda: clients.iam.list_role_tags(**kwargs))
        tags.update({t["Key"]: t["Value"] for t in answer.get("Tags", [])})
        if not answer.get("IsTruncated") or not answer.get("Marker"):
            break
        kwargs["Marker"] = answer["Marker"]
    return tags
