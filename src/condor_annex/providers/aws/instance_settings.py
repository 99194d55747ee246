"""What every annex instance gets, however it is launched (RunInstances, or the launch template
of an EC2 Fleet or a Spot Fleet): the annex tag, the launch request's own tag
``htcondor:LaunchToken`` (its client token, so a rollback ends only what this request made),
the lease end ``htcondor:LeaseEnd`` (read by the lease sweep and by the agent's instance-side
backstop), the owner ``htcondor:AnnexOwner`` (the user's identity; ``condor_annex sweep`` ends only
its own user's), IMDSv2 only with instance tags in metadata (the agent reads ``htcondor:AnnexName``,
``htcondor:AnnexOff`` and ``htcondor:LeaseEnd`` there) and a PUT response hop limit of 1 (a
containerised job's forwarded traffic cannot get a metadata token; aws-reality.md §7), shutdown
behaviour *terminate* (a node that powers off ends), the instance profile, security groups, key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from condor_annex.model import (RESERVED_TAG_PREFIX, TAG_ANNEX_NAME, TAG_ANNEX_OWNER,
                                TAG_BUDGET, TAG_CONFIG_BUCKET, TAG_IDLE_SHUTDOWN,
                                TAG_LAUNCH_TOKEN, TAG_LEASE_END, FleetRequest, LaunchRequest,
                                lease_end_value)

#: IMDS settings of every annex instance (EC2 ``InstanceMetadataOptionsRequest``): tokens
#: required (IMDSv2), tags visible, and a PUT response hop limit of 1 so that only the host's
#: own network stack gets a session token (AMIs marked ImdsSupport v2.0 default to 2).
METADATA_OPTIONS = {"HttpTokens": "required", "HttpEndpoint": "enabled",
                    "HttpPutResponseHopLimit": 1, "InstanceMetadataTags": "enabled"}


def annex_tags(annex_name: str, tags: Sequence[tuple[str, str]] = (),
               launch_token: str = "", lease_end: str = "",
               owner: str = "") -> list[dict[str, str]]:
    """EC2 tags of an annex's resources: ``htcondor:AnnexName`` first, ``htcondor:LaunchToken``,
    ``htcondor:LeaseEnd`` (epoch seconds, text) and ``htcondor:AnnexOwner`` (an ARN) when
    given, then the user's (``-tag NAME VALUE``) except any in our ``htcondor:`` space (the
    command lines refuse those; this is the last line of defence)."""
    ours = [{"Key": TAG_ANNEX_NAME, "Value": annex_name}]
    if launch_token:
        ours.append({"Key": TAG_LAUNCH_TOKEN, "Value": launch_token})
    if lease_end:
        ours.append({"Key": TAG_LEASE_END, "Value": lease_end})
    if owner:
        ours.append({"Key": TAG_ANNEX_OWNER, "Value": owner})
    return ours + [{"Key": k, "Value": v} for k, v in tags
                   if not k.lower().startswith(RESERVED_TAG_PREFIX)]


def request_lease_end(request: LaunchRequest | FleetRequest) -> str:
    """The ``htcondor:LeaseEnd`` value of a request's resources ("" for none): its
    ``lease_end``, else a fleet's ``valid_until`` (which is the lease end at launch)."""
    end = request.lease_end or getattr(request, "valid_until", None)
    return lease_end_value(end) if end is not None else ""


def own_tags(request: LaunchRequest | FleetRequest) -> list[dict[str, str]]:
    """Our tags only (no user tags) of what one request makes: the annex, the request's token,
    the lease end and the owner; the tags of a fleet, a Spot Fleet request and a launch
    template."""
    return annex_tags(request.annex_name, (), request.client_token, request_lease_end(request),
                      request.owner)


def request_tags(request: LaunchRequest | FleetRequest) -> list[dict[str, str]]:
    """Tags of what one launch request makes (instances, volumes): :func:`own_tags`, then the
    user's."""
    return annex_tags(request.annex_name, request.tags, request.client_token,
                      request_lease_end(request), request.owner)


def instance_tags(request: LaunchRequest | FleetRequest) -> list[dict[str, str]]:
    """Tags of each instance: :func:`request_tags`, plus ``htcondor:ConfigBucket`` when the
    request names the bucket and ``htcondor:Budget`` when it has a budget."""
    tags = request_tags(request)
    if request.config_bucket:
        tags.append({"Key": TAG_CONFIG_BUCKET, "Value": request.config_bucket})
    if request.budget:   # the lease sweep's budget backstop reads it (issue 12 item 5)
        tags.append({"Key": TAG_BUDGET, "Value": request.budget})
    if not getattr(request, "idle_shutdown", True):   # issue 13: --min nodes; the agent reads it
        tags.append({"Key": TAG_IDLE_SHUTDOWN, "Value": "off"})
    return tags


def instance_settings(request: LaunchRequest | FleetRequest) -> dict[str, Any]:
    """The RunInstances / ``LaunchTemplateData`` parameters shared by every launch path (EC2
    API field names; user data and instance type are left to the caller, whose encodings and
    choices differ).  ``request.config_bucket`` becomes the instance tag
    ``htcondor:ConfigBucket``, so the agent reads the bucket from instance metadata instead of
    asking IAM."""
    out: dict[str, Any] = {
        "ImageId": request.image_id,
        "IamInstanceProfile": {"Arn": request.instance_profile_arn},
        "InstanceInitiatedShutdownBehavior": "terminate",
        "MetadataOptions": dict(METADATA_OPTIONS),
        "TagSpecifications": [{"ResourceType": "instance", "Tags": instance_tags(request)},
                              {"ResourceType": "volume",
                               "Tags": request_tags(request)}],
    }
    if request.security_group_ids:
        out["SecurityGroupIds"] = list(request.security_group_ids)
    if request.key_name:
        out["KeyName"] = request.key_name
    return out
