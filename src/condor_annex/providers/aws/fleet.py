"""Spot capacity for an annex: Spot Fleet (RequestSpotFleet) and EC2 Fleet (CreateFleet).

See providers/base.py for the contract; :class:`AwsProvider.launch_fleet` and
:class:`AwsProvider.end_fleets` are the entry points.  Two APIs, as in the field:

* **Spot Fleet** (classic ``-slots W``; reference §3).  The user's Spot Fleet request config
  (JSON) is the base; what the annex needs replaces or fills it, as the original tool did, with
  its defects fixed:

  - ``ClientToken`` = ``<annex>_<uuid>``, ``TargetCapacity`` = W;
  - ``ValidFrom`` dropped, ``ValidUntil`` = **the lease end** (the original used now + 5 min,
    after which an unfilled fleet gave up), ``TerminateInstancesWithExpiration`` = true, so the
    fleet is its own backstop of the lease;
  - ``AllocationStrategy`` defaults to ``capacityOptimized``, ``Type`` to ``request``;
    ``IamFleetRole`` comes from the file, else the ``ANNEX_DEFAULT_SFR_IAM_FLEET_ROLE`` knob;
  - every launch specification gets the annex's instance profile (always: the agent finds its
    bundle through it), the annex tag and ``-tag`` pairs as instance tags, base64 user data
    (``-aws-user-data`` replaces, the ``-default`` form fills), and setup's security group, key
    pair and the default AMI where the file names none;
  - the request itself is tagged ``htcondor:AnnexName`` and ``htcondor:LaunchToken``
    (ResourceType ``spot-fleet-request``), so the lease enforcer matches it exactly, never by a
    token prefix, and a rollback ends only the fleet of its own request.

* **EC2 Fleet** (modern ``create --spot``).  A launch template ``annex-<name>`` carries the
  launch settings (IMDSv2 required, instance metadata tags on, instance profile, security group,
  user data, shutdown behaviour *terminate*, instance and volume tags); CreateFleet asks for
  ``TotalTargetCapacity`` = W of Spot capacity with one override per instance type and its
  ``WeightedCapacity``, allocation ``capacity-optimized``, the fleet tagged with the annex.
  The fleet is tagged with the annex and the request's token; a launch template made by the
  request carries the token too, so a rollback deletes a template only when its own request
  made it.  ``instant`` fleets answer synchronously (their instance ids come back at once, capacity
  errors in ``Errors``); ``request``/``maintain`` fleets also get ``ValidUntil`` = lease end and
  ``TerminateInstancesWithExpiration``.

Ending (``off``) cancels the annex's Spot Fleet requests and deletes its EC2 Fleets, both with
``TerminateInstances``, then deletes its launch template.  Fleets are found by the exact tag
only: a ClientToken prefix could name another tool's fleet (aws-reality.md §14).

Launches are retried as RunInstances is (:mod:`condor_annex.providers.aws.launch_retry`): before
a resend, a fleet tagged with the request's token is looked up and, when found, is the answer.

The request builders (:func:`spot_fleet_config`, :func:`launch_template_data`,
:func:`create_fleet_params`) are pure, so tests pin the exact request shape.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

from condor_annex.config import AwsSettings
from condor_annex.errors import (CapacityError, InvalidRequestError, NotFoundError,
                                 ProviderError)
from collections.abc import Callable

from condor_annex.model import (DEFAULT_EC2_FLEET_ALLOCATION, DEFAULT_SPOT_FLEET_ALLOCATION,
                                SPOT_API_EC2_FLEET, SPOT_API_SPOT_FLEET, TAG_ANNEX_NAME,
                                TAG_LAUNCH_TOKEN, FleetRequest, FleetResult, FleetsEnded)
from condor_annex.providers.aws.errors import aws_errors
from condor_annex.providers.aws.instance_settings import instance_settings, instance_tags
from condor_annex.providers.aws.launch_retry import launch_with_retries
from condor_annex.providers.aws.session import make_client

log = logging.getLogger(__name__)

#: CancelSpotFleetRequests takes at most this many ids per call.
CANCEL_SPOT_FLEET_BATCH = 100
#: DeleteFleets takes at most 25 instant fleets per call (and 100 others); 25 suits both.
DELETE_FLEETS_BATCH = 25


def launch_template_name(annex_name: str) -> str:
    """Name of an annex's EC2 Fleet launch template (``annex-<name>``)."""
    return f"annex-{annex_name}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- Spot Fleet (RequestSpotFleet) -----------------------------------------------------------

def spot_fleet_config(request: FleetRequest) -> dict[str, Any]:
    """The ``SpotFleetRequestConfig`` for a classic spot annex (pure; see the module docstring).

    Args:
        request: with ``spot.api == "spot-fleet"`` and a validated ``spot.spot_fleet_config``.

    Returns:
        The RequestSpotFleet ``SpotFleetRequestConfig`` parameter.

    Raises:
        InvalidRequestError: no ``IamFleetRole`` in the file or the request (the CLI and the
            service check this first, as bad input).
    """
    spot = request.spot
    config: dict[str, Any] = json.loads(spot.spot_fleet_config) if spot.spot_fleet_config \
        else {"LaunchSpecifications": [{}]}
    config.pop("ValidFrom", None)
    role = spot.fleet_role_arn()
    if not role:
        raise InvalidRequestError(f"spot fleet of {request.annex_name}: no IamFleetRole",
                                  code="MissingIamFleetRole")
    config.update({
        "ClientToken": request.client_token,
        "IamFleetRole": role,
        "TargetCapacity": request.target_capacity,
        "ValidUntil": request.valid_until,
        "TerminateInstancesWithExpiration": True,
    })
    config.setdefault("Type", spot.fleet_type if spot.fleet_type != "instant" else "request")
    config.setdefault("AllocationStrategy",
                      spot.allocation_strategy or DEFAULT_SPOT_FLEET_ALLOCATION)
    tag_specs = [t for t in config.get("TagSpecifications", [])
                 if t.get("ResourceType") != "spot-fleet-request"]
    config["TagSpecifications"] = tag_specs + [{
        "ResourceType": "spot-fleet-request", "Tags": _fleet_tags(request)}]
    config["LaunchSpecifications"] = [_launch_specification(request, s)
                                      for s in config["LaunchSpecifications"]]
    return config


def _launch_specification(request: FleetRequest, spec: dict[str, Any]) -> dict[str, Any]:
    """One Spot Fleet launch specification with the annex's settings applied."""
    spec = dict(spec)
    spec["IamInstanceProfile"] = {"Arn": request.instance_profile_arn}
    if not spec.get("ImageId"):
        spec["ImageId"] = request.image_id
    if not spec.get("SecurityGroups") and not spec.get("NetworkInterfaces") \
            and request.security_group_ids:
        spec["SecurityGroups"] = [{"GroupId": g} for g in request.security_group_ids]
    if not spec.get("KeyName") and request.key_name:
        spec["KeyName"] = request.key_name
    if request.user_data is not None:
        spec["UserData"] = _b64(request.user_data)
    elif not spec.get("UserData") and request.spot.default_user_data is not None:
        spec["UserData"] = _b64(request.spot.default_user_data)
    ours = instance_tags(request)
    theirs = [t for s in spec.get("TagSpecifications", []) if s.get("ResourceType") == "instance"
              for t in s.get("Tags", []) if t.get("Key") not in {o["Key"] for o in ours}]
    others = [s for s in spec.get("TagSpecifications", []) if s.get("ResourceType") != "instance"]
    spec["TagSpecifications"] = others + [{"ResourceType": "instance", "Tags": ours + theirs}]
    return spec


def _fleet_tags(request: FleetRequest) -> list[dict[str, str]]:
    """Tags of the fleet (or Spot Fleet request) itself: the annex and the request's token."""
    return [{"Key": TAG_ANNEX_NAME, "Value": request.annex_name},
            {"Key": TAG_LAUNCH_TOKEN, "Value": request.client_token}]


def request_spot_fleet(settings: AwsSettings, request: FleetRequest, *,
                       notify: Callable[[str], None] | None = None) -> FleetResult:
    """Send RequestSpotFleet (retried safely; a capacity error surfaces at once).

    Returns:
        The token and the ``sfr-...`` id; instances come later (the fleet is asynchronous).

    Raises:
        InvalidRequestError: the request was rejected (e.g. the fleet role is wrong).
        ProviderError: any other failure (``ambiguous`` when a lost attempt may have made it).
    """
    config = spot_fleet_config(request)
    ec2 = make_client(settings, "ec2", fast_fail=True)

    def send() -> FleetResult:
        with aws_errors("ec2.RequestSpotFleet"):
            reply = ec2.request_spot_fleet(SpotFleetRequestConfig=config)
        return FleetResult(client_token=request.client_token,
                           fleet_id=reply["SpotFleetRequestId"])

    def find() -> FleetResult | None:
        ids = annex_spot_fleet_requests(make_client(settings, "ec2"), request.annex_name,
                                        request.client_token)
        return FleetResult(request.client_token, ids[0]) if ids else None

    return launch_with_retries(send, find, what="ec2.RequestSpotFleet", notify=notify)


# --- EC2 Fleet (CreateLaunchTemplate + CreateFleet) ------------------------------------------

def launch_template_data(request: FleetRequest) -> dict[str, Any]:
    """``LaunchTemplateData`` of an annex's launch template (pure).

    No instance type (the fleet's overrides choose) and no market options (EC2 Fleet refuses a
    template that has them).
    """
    data = instance_settings(request)
    if request.user_data is not None:
        data["UserData"] = _b64(request.user_data)
    return data


def create_fleet_params(request: FleetRequest, launch_template_id: str,
                        version: str) -> dict[str, Any]:
    """CreateFleet parameters for an annex (pure).

    Args:
        request: with ``spot.api == "ec2-fleet"`` and at least one instance type.
        launch_template_id: the annex's launch template.
        version: its version to use (a number as text).
    """
    spot = request.spot
    params: dict[str, Any] = {
        "ClientToken": request.client_token,
        "Type": spot.fleet_type,
        "SpotOptions": {
            "AllocationStrategy": spot.allocation_strategy or DEFAULT_EC2_FLEET_ALLOCATION,
            "InstanceInterruptionBehavior": "terminate",
        },
        "TargetCapacitySpecification": {
            "TotalTargetCapacity": request.target_capacity,
            "SpotTargetCapacity": request.target_capacity,
            "OnDemandTargetCapacity": 0,
            "DefaultTargetCapacityType": "spot",
        },
        "LaunchTemplateConfigs": [{
            "LaunchTemplateSpecification": {"LaunchTemplateId": launch_template_id,
                                            "Version": version},
            "Overrides": [{"InstanceType": t, "WeightedCapacity": float(w)}
                          for t, w in spot.instance_types],
        }],
        "TagSpecifications": [{"ResourceType": "fleet", "Tags": _fleet_tags(request)}],
    }
    if spot.fleet_type != "instant":
        # Not supported for instant fleets (they are one synchronous request).
        params["ValidUntil"] = request.valid_until
        params["TerminateInstancesWithExpiration"] = True
    if spot.fleet_type == "maintain":
        # "Supported only for fleets of type maintain" (API_CreateFleet).
        params["ExcessCapacityTerminationPolicy"] = "termination"
    return params


def _put_launch_template(ec2: Any, request: FleetRequest) -> tuple[str, str, bool]:
    """Create the annex's launch template, or a new version of it when the annex exists.

    Returns:
        (template id, version, created) where ``created`` says a new template was made.
    """
    name = launch_template_name(request.annex_name)
    data = launch_template_data(request)
    try:
        with aws_errors("ec2.CreateLaunchTemplate"):
            lt = ec2.create_launch_template(
                LaunchTemplateName=name, LaunchTemplateData=data,
                ClientToken=request.client_token,
                TagSpecifications=[{"ResourceType": "launch-template",
                                    "Tags": _fleet_tags(request)}])["LaunchTemplate"]
        return lt["LaunchTemplateId"], str(lt["LatestVersionNumber"]), True
    except InvalidRequestError as e:
        if not e.code.endswith("AlreadyExistsException"):
            raise
    with aws_errors("ec2.CreateLaunchTemplateVersion"):
        v = ec2.create_launch_template_version(
            LaunchTemplateName=name, LaunchTemplateData=data,
            ClientToken=request.client_token)["LaunchTemplateVersion"]
    return v["LaunchTemplateId"], str(v["VersionNumber"]), False


def create_fleet(settings: AwsSettings, request: FleetRequest, *,
                 notify: Callable[[str], None] | None = None) -> FleetResult:
    """Create the launch template and send CreateFleet (retried safely, as RunInstances).

    An ``instant`` fleet that launched nothing is deleted, as is a template made by this call,
    and its ``Errors`` are raised; a partial instant fleet is returned as it is.

    Raises:
        CapacityError: an instant fleet got no capacity (its first error code is ``code``).
        InvalidRequestError: a parameter was rejected.
        ProviderError: any other failure (``ambiguous`` when a lost attempt may have made it).
    """
    ec2 = make_client(settings, "ec2", fast_fail=True)
    template_id, version, created = launch_with_retries(
        lambda: _put_launch_template(ec2, request), lambda: None,
        what="ec2.CreateLaunchTemplate", notify=notify)
    params = create_fleet_params(request, template_id, version)

    def send() -> FleetResult:
        with aws_errors("ec2.CreateFleet"):
            reply = ec2.create_fleet(**params)
        ids = tuple(i for group in reply.get("Instances", [])
                    for i in group.get("InstanceIds", []))
        if request.spot.fleet_type == "instant" and not ids:
            errors = reply.get("Errors", [])
            code = (errors[0].get("ErrorCode") if errors else "") or "NoCapacity"
            detail = "; ".join(f"{e.get('ErrorCode')}: {e.get('ErrorMessage')}"
                               for e in errors[:3]) or "no instance launched"
            _delete_fleets(make_client(settings, "ec2"), [reply["FleetId"]])
            raise CapacityError(f"ec2.CreateFleet: {code}: {detail}", code=code)
        return FleetResult(client_token=request.client_token, fleet_id=reply["FleetId"],
                           instance_ids=ids, launch_template_id=template_id)

    def find() -> FleetResult | None:
        ids = annex_fleets(make_client(settings, "ec2"), request.annex_name,
                           request.client_token)
        return FleetResult(request.client_token, ids[0], launch_template_id=template_id) \
            if ids else None

    try:
        return launch_with_retries(send, find, what="ec2.CreateFleet", notify=notify)
    except BaseException:
        if created:
            _delete_template(make_client(settings, "ec2"), template_id)
        raise


def launch_fleet(settings: AwsSettings, request: FleetRequest, *,
                 notify: Callable[[str], None] | None = None) -> FleetResult:
    """Launch ``request`` with the API its spot spec names (see the module docstring)."""
    if request.spot.api == SPOT_API_SPOT_FLEET:
        return request_spot_fleet(settings, request, notify=notify)
    if request.spot.api == SPOT_API_EC2_FLEET:
        if not request.spot.instance_types:
            raise InvalidRequestError("ec2.CreateFleet: no instance types", code="NoTypes")
        return create_fleet(settings, request, notify=notify)
    raise InvalidRequestError(f"unknown spot API {request.spot.api!r}", code="UnknownApi")


# --- ending -----------------------------------------------------------------------------------

def _tagged(tags: list[dict[str, str]] | None, annex_name: str, launch_token: str = "") -> bool:
    """True when ``tags`` name the annex exactly (and the launch request, when given)."""
    have = {t.get("Key"): t.get("Value") for t in tags or ()}
    return have.get(TAG_ANNEX_NAME) == annex_name and \
        (not launch_token or have.get(TAG_LAUNCH_TOKEN) == launch_token)


def annex_spot_fleet_requests(ec2: Any, annex_name: str, launch_token: str = "") -> list[str]:
    """Ids of the annex's Spot Fleet requests not yet cancelled (paginated; exact tag only,
    and only the request ``launch_token`` made when given)."""
    found = []
    with aws_errors("ec2.DescribeSpotFleetRequests"):
        for page in ec2.get_paginator("describe_spot_fleet_requests").paginate():
            for f in page.get("SpotFleetRequestConfigs", []):
                if not f.get("SpotFleetRequestState", "").startswith("cancelled") \
                        and _tagged(f.get("Tags"), annex_name, launch_token):
                    found.append(f["SpotFleetRequestId"])
    return found


def annex_fleets(ec2: Any, annex_name: str, launch_token: str = "") -> list[str]:
    """Ids of the annex's EC2 Fleets not yet deleted (paginated; exact tag, and only the fleet
    ``launch_token`` made when given)."""
    found = []
    with aws_errors("ec2.DescribeFleets"):
        for page in ec2.get_paginator("describe_fleets").paginate():
            for f in page.get("Fleets", []):
                if not f.get("FleetState", "").startswith("deleted") \
                        and _tagged(f.get("Tags"), annex_name, launch_token):
                    found.append(f["FleetId"])
    return found


def _terminating(call: Any, operation: str, **params: Any) -> dict[str, Any]:
    """Call a fleet-ending operation with ``TerminateInstances=True``; when the answer is
    ``InvalidParameterCombination`` (an emulator's answer for a fleet with no instance left:
    moto 5.2 terminates an empty list), the instances are gone already, so end the fleet
    without terminating.  AWS itself accepts the first call."""
    try:
        with aws_errors(operation):
            return call(TerminateInstances=True, **params)
    except InvalidRequestError as e:
        if e.code != "InvalidParameterCombination":
            raise
    with aws_errors(operation):
        return call(TerminateInstances=False, **params)


def _delete_fleets(ec2: Any, fleet_ids: list[str]) -> None:
    for start in range(0, len(fleet_ids), DELETE_FLEETS_BATCH):
        reply = _terminating(ec2.delete_fleets, "ec2.DeleteFleets",
                             FleetIds=fleet_ids[start:start + DELETE_FLEETS_BATCH])
        failed = [f for f in reply.get("UnsuccessfulFleetDeletions", [])
                  if "NotFound" not in (f.get("Error", {}).get("Code") or "")]
        if failed:
            err = failed[0].get("Error", {})
            raise ProviderError(f"ec2.DeleteFleets: {err.get('Code')}: {err.get('Message')} "
                                f"({failed[0].get('FleetId')})", code=err.get("Code") or "")


def _delete_template(ec2: Any, template_id: str) -> None:
    try:
        with aws_errors("ec2.DeleteLaunchTemplate"):
            ec2.delete_launch_template(LaunchTemplateId=template_id)
    except NotFoundError:
        pass


def _annex_templates(ec2: Any, annex_name: str, launch_token: str = "") -> list[str]:
    """The annex's launch template ids (with ``launch_token``: only one that request made)."""
    # A name filter, not LaunchTemplateNames: a missing name is then an empty answer.
    with aws_errors("ec2.DescribeLaunchTemplates"):
        reply = ec2.describe_launch_templates(Filters=[{
            "Name": "launch-template-name", "Values": [launch_template_name(annex_name)]}])
    return [t["LaunchTemplateId"] for t in reply.get("LaunchTemplates", [])
            if t.get("LaunchTemplateName") == launch_template_name(annex_name)
            and (not launch_token or _tagged(t.get("Tags"), annex_name, launch_token))]


def end_fleets(settings: AwsSettings, annex_name: str, *,
               launch_token: str = "") -> FleetsEnded:
    """Cancel the annex's Spot Fleet requests and delete its EC2 Fleets (both terminating their
    instances), then delete its launch template.  Idempotent: a second call finds nothing.

    Args:
        launch_token: end only what that launch request made (a rollback): its fleets, and the
            launch template only when that request created it.

    Raises:
        ProviderError: a call failed.
    """
    ec2 = make_client(settings, "ec2")
    sfrs = annex_spot_fleet_requests(ec2, annex_name, launch_token)
    for start in range(0, len(sfrs), CANCEL_SPOT_FLEET_BATCH):
        _terminating(ec2.cancel_spot_fleet_requests, "ec2.CancelSpotFleetRequests",
                     SpotFleetRequestIds=sfrs[start:start + CANCEL_SPOT_FLEET_BATCH])
    fleets = annex_fleets(ec2, annex_name, launch_token)
    _delete_fleets(ec2, fleets)
    templates = _annex_templates(ec2, annex_name, launch_token)
    for template_id in templates:
        _delete_template(ec2, template_id)
    if sfrs or fleets or templates:
        log.info("annex %s: cancelled %s, deleted %s and %s", annex_name, sfrs, fleets,
                 templates)
    return FleetsEnded(tuple(sfrs), tuple(fleets), tuple(templates))
