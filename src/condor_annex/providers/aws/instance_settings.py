"""What every annex instance gets, however it is launched (RunInstances, a Spot Fleet launch
specification, an EC2 Fleet launch template): the annex tag, the launch request's own tag
``htcondor:LaunchToken`` (its client token, so a rollback ends only what this request made), IMDSv2 only with instance tags in
metadata (the agent reads ``htcondor:AnnexName`` and ``htcondor:AnnexOff`` there), shutdown
behaviour *terminate* (a node that powers off ends), the instance profile, security groups, key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from condor_annex.model import (RESERVED_TAG_PREFIX, TAG_ANNEX_NAME, TAG_CONFIG_BUCKET,
                                TAG_LAUNCH_TOKEN, FleetRequest, LaunchRequest)


def annex_tags(annex_name: str, tags: Sequence[tuple[str, str]] = (),
               launch_token: str = "") -> list[dict[str, str]]:
    """EC2 tags of an annex's resources: ``htcondor:AnnexName`` first, ``htcondor:LaunchToken``
    when given, then the user's (``-tag NAME VALUE``) except any in our ``htcondor:`` space
    (the command lines refuse those; this is the last line of defence)."""
    ours = [{"Key": TAG_ANNEX_NAME, "Value": annex_name}]
    if launch_token:
        ours.append({"Key": TAG_LAUNCH_TOKEN, "Value": launch_token})
    return ours + [{"Key": k, "Value": v} for k, v in tags
                   if not k.lower().startswith(RESERVED_TAG_PREFIX)]


def request_tags(request: LaunchRequest | FleetRequest) -> list[dict[str, str]]:
    """Tags of what one launch request makes (instances, volumes, fleets): the annex and the
    request's client token."""
    return annex_tags(request.annex_name, request.tags, request.client_token)


def instance_tags(request: LaunchRequest | FleetRequest) -> list[dict[str, str]]:
    """Tags of each instance: :func:`request_tags`, plus ``htcondor:ConfigBucket`` when the
    request names the bucket."""
    tags = request_tags(request)
    if request.config_bucket:
        tags.append({"Key": TAG_CONFIG_BUCKET, "Value": request.config_bucket})
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
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled",
                            "InstanceMetadataTags": "enabled"},
        "TagSpecifications": [{"ResourceType": "instance", "Tags": instance_tags(request)},
                              {"ResourceType": "volume",
                               "Tags": request_tags(request)}],
    }
    if request.security_group_ids:
        out["SecurityGroupIds"] = list(request.security_group_ids)
    if request.key_name:
        out["KeyName"] = request.key_name
    return out
