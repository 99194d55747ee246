"""Spot capacity for an annex: Spot Fleet (RequestSpotFleet) and EC2 Fleet (CreateFleet).

See providers/base.py for the contract; :class:`AwsProvider.launch_fleet` and
:class:`AwsProvider.end_fleets` are the entry points.  Two APIs, as in the field:

* **Spot Fleet** (classic ``-slots W``; reference §3).  The user's Spot Fleet request config
  (JSON) is the base; what the annex needs replaces or fills it, as the original tool did, with
  its defects fixed:

  - ``ClientToken`` = ``<annex>_<uuid>``, ``TargetCapacity`` = W;
  - ``ValidFrom`` dropped, ``ValidUntil`` = **the lease end at launch** (the original used now +
    5 min, after which an unfilled fleet gave up) with ``TerminateInstancesWithExpiration`` =
    **false**: ``ValidUntil`` cannot be modified, so it only stops an unfilled (or maintained)
    fleet from placing instances after the original end; the instances end with the lease,
    which ``extend`` moves (aws-reality.md §3);
  - ``AllocationStrategy`` defaults to ``capacityOptimized``, ``Type`` to ``request``;
    ``IamFleetRole`` comes from the file, else the ``ANNEX_DEFAULT_SFR_IAM_FLEET_ROLE`` knob;
  - the launch specifications become ``LaunchTemplateConfigs`` of the annex's launch template
    ``annex-<name>``, because a launch specification cannot carry ``MetadataOptions``
    (IMDSv2, hop limit 1, tags in metadata; aws-reality.md §8): each specification's instance
    type, weighted capacity, price and subnet become an override, the rest (its AMI, key,
    user data, security groups, block devices) the template data, with one template version
    per distinct data (:func:`spot_fleet_templates`);
  - every instance gets the annex's instance profile (always: the agent finds its bundle
    through it), the annex tags and ``-tag`` pairs, base64 user data (``-aws-user-data``
    replaces, the ``-default`` form fills), and setup's security group, key pair and the
    default AMI where the file names none;
  - the request itself is tagged ``htcondor:AnnexName``, ``htcondor:LaunchToken`` and
    ``htcondor:LeaseEnd`` (ResourceType ``spot-fleet-request``), so the lease enforcer matches
    it exactly, never by a token prefix, and a rollback ends only the fleet of its own request.

* **EC2 Fleet** (modern ``create --spot``).  A launch template ``annex-<name>`` carries the
  launch settings (IMDSv2 required with hop limit 1, instance metadata tags on, instance
  profile, security group, user data, shutdown behaviour *terminate*, instance and volume
  tags); CreateFleet asks for ``TotalTargetCapacity`` = W of Spot capacity with one override
  per instance type (and subnet, when the annex names subnets) and its ``WeightedCapacity``,
  allocation ``capacity-optimized``.  The fleet is tagged with the annex, the request's token
  and the lease end; a launch template made by the request carries them too, so a rollback
  deletes a template only when its own request made it.  ``instant`` fleets answer
  synchronously (their instance ids come back at once, capacity errors in ``Errors``);
  ``request``/``maintain`` fleets also get ``ValidUntil`` = lease end at launch with
  ``TerminateInstancesWithExpiration`` false, as Spot Fleets.

Ending (``off``) cancels the annex's Spot Fleet requests and deletes its EC2 Fleets, both with
``TerminateInstances``, then deletes its launch template.  Fleets are found by the exact tag
only: a ClientToken prefix could name another tool's fleet (aws-reality.md §14).

Launches are retried as RunInstances is (:mod:`condor_annex.providers.aws.launch_retry`): before
a resend, a fleet tagged with the request's token is looked up and, when found, is the answer.

The request builders (:func:`spot_fleet_templates`, :func:`spot_fleet_config`,
:func:`launch_template_data`, :func:`create_fleet_params`) are pure, so tests pin the exact
request shape.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import datetime, timezone
from typing import Any

from condor_annex.config import AwsSettings
from condor_annex.errors import (CapacityError, InvalidRequestError, NotFoundError,
                                 ProviderError)
from collections.abc import Callable

from condor_annex.model import (DEFAULT_EC2_FLEET_ALLOCATION, DEFAULT_SPOT_FLEET_ALLOCATION,
                                SPOT_API_EC2_FLEET, SPOT_API_SPOT_FLEET, TAG_ANNEX_NAME,
                                TAG_LAUNCH_TOKEN, FleetRequest, FleetResult, FleetsEnded)
from condor_annex.providers.aws.errors import aws_errors
from condor_annex.providers.aws.instance_settings import (instance_settings, instance_tags,
                                                         own_tags)
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

#: Fields of a Spot Fleet launch specification that become a ``LaunchTemplateOverrides`` entry
#: (the rest go into the launch template; RequestSpotFleet's overrides have no ImageId).
_OVERRIDE_FIELDS = ("InstanceType", "WeightedCapacity", "SpotPrice", "InstanceRequirements")
#: Launch specification fields copied into the template unchanged (same shape in both APIs).
_TEMPLATE_FIELDS = ("EbsOptimized", "Monitoring", "Placement", "KernelId", "NetworkInterfaces")
#: EBS fields a launch specification may carry and a launch template may not (they place a
#: stand-alone volume; an instance's root and data volumes go where the instance goes).
_EBS_NOT_IN_TEMPLATES = ("OutpostArn", "AvailabilityZone", "AvailabilityZoneId")


def _spec_template_data(request: FleetRequest, spec: dict[str, Any]) -> dict[str, Any]:
    """The ``LaunchTemplateData`` of one Spot Fleet launch specification: the annex's
    :func:`instance_settings` (profile, IMDS options, shutdown behaviour, tags, setup's
    security group, key pair and AMI) with what the specification names instead."""
    data = instance_settings(request)
    if spec.get("ImageId"):
        data["ImageId"] = spec["ImageId"]
    if spec.get("KeyName"):
        data["KeyName"] = spec["KeyName"]
    groups = spec.get("SecurityGroups") or []
    if groups or spec.get("NetworkInterfaces"):
        # The specification's own network settings replace setup's security group.
        data.pop("SecurityGroupIds", None)
    if groups and all(g.get("GroupId") for g in groups):
        data["SecurityGroupIds"] = [g["GroupId"] for g in groups]
    elif groups:
        data["SecurityGroups"] = [g.get("GroupName") or g.get("GroupId") for g in groups]
    for key in _TEMPLATE_FIELDS:
        if key in spec:
            data[key] = spec[key]
    if "RamdiskId" in spec:
        data["RamDiskId"] = spec["RamdiskId"]   # the template's spelling
    if "BlockDeviceMappings" in spec:
        data["BlockDeviceMappings"] = [
            {**m, "Ebs": {k: v for k, v in m["Ebs"].items() if k not in _EBS_NOT_IN_TEMPLATES}}
            if isinstance(m.get("Ebs"), dict) else m for m in spec["BlockDeviceMappings"]]
    if request.user_data is not None:
        data["UserData"] = _b64(request.user_data)
    elif spec.get("UserData"):
        data["UserData"] = spec["UserData"]
    elif request.spot.default_user_data is not None:
        data["UserData"] = _b64(request.spot.default_user_data)
    ours = instance_tags(request)
    theirs = [t for s in spec.get("TagSpecifications", []) if s.get("ResourceType") == "instance"
              for t in s.get("Tags", []) if t.get("Key") not in {o["Key"] for o in ours}]
    data["TagSpecifications"] = [
        {**t, "Tags": ours + theirs} if t["ResourceType"] == "instance" else t
        for t in data["TagSpecifications"]]
    return data


def _spec_overrides(request: FleetRequest, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``LaunchTemplateOverrides`` of one launch specification: its instance type, weight,
    price and requirements, once per subnet (its own ``SubnetId``, a comma-separated list in
    that API, else the annex's subnets unless it names network interfaces)."""
    base = {k: spec[k] for k in _OVERRIDE_FIELDS if k in spec}
    if spec.get("SubnetId"):
        subnets = [s.strip() for s in str(spec["SubnetId"]).split(",") if s.strip()]
    elif spec.get("NetworkInterfaces"):
        subnets = []
    else:
        subnets = list(request.subnet_ids)
    return [{**base, "SubnetId": s} for s in subnets] or [base]


def spot_fleet_templates(request: FleetRequest) -> list[tuple[dict[str, Any],
                                                               list[dict[str, Any]]]]:
    """The launch template versions a Spot Fleet needs, each with its overrides (pure).

    Each launch specification of the user's file becomes overrides (instance type, weighted
    capacity, price, subnet) of the launch template data it needs; specifications needing the
    same data (the usual case: they differ only in type and weight) share one version, so a
    file whose specifications name no AMI, key, user data or security group of their own gives
    **one** template version with one override per specification (and subnet).

    Returns:
        [(LaunchTemplateData, [override, ...]), ...] in the file's order.
    """
    spot = request.spot
    config = json.loads(spot.spot_fleet_config) if spot.spot_fleet_config \
        else {"LaunchSpecifications": [{}]}
    groups: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for spec in config["LaunchSpecifications"]:
        data = _spec_template_data(request, spec)
        key = json.dumps(data, sort_keys=True)
        groups.setdefault(key, (data, []))[1].extend(_spec_overrides(request, spec))
    return list(groups.values())


def spot_fleet_config(request: FleetRequest, launch_template_id: str,
                      versions: list[str]) -> dict[str, Any]:
    """The ``SpotFleetRequestConfig`` for a classic spot annex (pure; see the module docstring).

    Args:
        request: with ``spot.api == "spot-fleet"`` and a validated ``spot.spot_fleet_config``.
        launch_template_id: the annex's launch template ``annex-<name>``.
        versions: the template's version for each of :func:`spot_fleet_templates` (same
            order).

    Returns:
        The RequestSpotFleet ``SpotFleetRequestConfig`` parameter: the file's settings with
        ``LaunchTemplateConfigs`` (one per template version) instead of its launch
        specifications, since launch specifications cannot carry ``MetadataOptions``
        (API_SpotFleetLaunchSpecification; aws-reality.md §8).

    Raises:
        InvalidRequestError: no ``IamFleetRole`` in the file or the request (the CLI and the
            service check this first, as bad input).
    """
    spot = request.spot
    config: dict[str, Any] = json.loads(spot.spot_fleet_config) if spot.spot_fleet_config \
        else {}
    config.pop("ValidFrom", None)
    config.pop("LaunchSpecifications", None)
    role = _fleet_role(request)
    config.update({
        "ClientToken": request.client_token,
        "IamFleetRole": role,
        "TargetCapacity": request.target_capacity,
        # ValidUntil cannot be modified (ModifySpotFleetRequest has no such field), so it only
        # stops an unfilled or maintained fleet at the lease end known at launch; instances
        # live until the lease (which extend moves) ends them.
        "ValidUntil": request.valid_until,
        "TerminateInstancesWithExpiration": False,
    })
    config.setdefault("Type", spot.fleet_type if spot.fleet_type != "instant" else "request")
    config.setdefault("AllocationStrategy",
                      spot.allocation_strategy or DEFAULT_SPOT_FLEET_ALLOCATION)
    tag_specs = [t for t in config.get("TagSpecifications", [])
                 if t.get("ResourceType") != "spot-fleet-request"]
    config["TagSpecifications"] = tag_specs + [{
        "ResourceType": "spot-fleet-request", "Tags": _fleet_tags(request)}]
    templates = spot_fleet_templates(request)
    config["LaunchTemplateConfigs"] = [
        {"LaunchTemplateSpecification": {"LaunchTemplateId": launch_template_id,
                                         "Version": version},
         "Overrides": overrides}
        for (_, overrides), version in zip(templates, versions)]
    return config


def _fleet_role(request: FleetRequest) -> str:
    """The Spot Fleet role (file, else knob); InvalidRequestError when there is none."""
    role = request.spot.fleet_role_arn()
    if not role:
        raise InvalidRequestError(f"spot fleet of {request.annex_name}: no IamFleetRole",
                                  code="MissingIamFleetRole")
    return role


def _fleet_tags(request: FleetRequest) -> list[dict[str, str]]:
    """Tags of the fleet (or Spot Fleet request) and launch template itself: the annex, the
    request's token and the lease end."""
    return own_tags(request)


def request_spot_fleet(settings: AwsSettings, request: FleetRequest, *,
                       notify: Callable[[str], None] | None = None) -> FleetResult:
    """Create the annex's launch template (or new versions of it), then send RequestSpotFleet
    with ``LaunchTemplateConfigs`` (each retried safely; a capacity error surfaces at once).
    A template made by this call is deleted again when the request fails.

    Returns:
        The token, the ``sfr-...`` id and the template; instances come later (the fleet is
        asynchronous).

    Raises:
        InvalidRequestError: the request was rejected (e.g. the fleet role is wrong).
        ProviderError: any other failure (``ambiguous`` when a lost attempt may have made it).
    """
    _fleet_role(request)   # a missing role is refused before any call
    ec2 = make_client(settings, "ec2", fast_fail=True)
    template_id, versions, created = _put_templates(
        ec2, request, [data for data, _ in spot_fleet_templates(request)], notify=notify)
    config = spot_fleet_config(request, template_id, versions)

    def send() -> FleetResult:
        with aws_errors("ec2.RequestSpotFleet"):
            reply = ec2.request_spot_fleet(SpotFleetRequestConfig=config)
        return FleetResult(client_token=request.client_token,
                           fleet_id=reply["SpotFleetRequestId"],
                           launch_template_id=template_id)

    def find() -> FleetResult | None:
        ids = annex_spot_fleet_requests(make_client(settings, "ec2"), request.annex_name,
                                        request.client_token)
        return FleetResult(request.client_token, ids[0], launch_template_id=template_id) \
            if ids else None

    try:
        return launch_with_retries(send, find, what="ec2.RequestSpotFleet", notify=notify)
    except BaseException:
        if created:
            _delete_template(make_client(settings, "ec2"), template_id)
        raise


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
            "Overrides": [{"InstanceType": t, "WeightedCapacity": float(w),
                           **({"SubnetId": subnet} if subnet else {}),
                           # --max-price: USD per unit-hour (API_FleetLaunchTemplateOverrides-
                           # Request), so a type of weight w may cost w times it an hour.
                           **({"MaxPrice": spot.max_price} if spot.max_price else {})}
                          for t, w in spot.instance_types
                          for subnet in (request.subnet_ids or ("",))],
        }],
        "TagSpecifications": [{"ResourceType": "fleet", "Tags": _fleet_tags(request)}],
    }
    if spot.fleet_type != "instant":
        # Not supported for instant fleets (they are one synchronous request).  ValidUntil
        # cannot be modified (ModifyFleet has no such field): it only stops the fleet placing
        # and replacing instances at the lease end known at launch; the instances live until
        # the lease, which extend moves, ends them.
        params["ValidUntil"] = request.valid_until
        params["TerminateInstancesWithExpiration"] = False
    if spot.fleet_type == "maintain":
        # "Supported only for fleets of type maintain" (API_CreateFleet).
        params["ExcessCapacityTerminationPolicy"] = "termination"
    return params


def _put_templates(ec2: Any, request: FleetRequest, datas: list[dict[str, Any]], *,
                   notify: Callable[[str], None] | None = None) -> tuple[str, list[str], bool]:
    """Create the annex's launch template ``annex-<name>`` with ``datas[0]`` (or a new version
    of it when the annex has one), then one more version per further data; each call is
    retried safely (:func:`launch_with_retries`) with a client token of its own.

    Returns:
        (template id, [version per data], created) where ``created`` says this call made the
        template (a rollback then deletes it).
    """
    name = launch_template_name(request.annex_name)

    def first() -> tuple[str, str, bool]:
        try:
            with aws_errors("ec2.CreateLaunchTemplate"):
                lt = ec2.create_launch_template(
                    LaunchTemplateName=name, LaunchTemplateData=datas[0],
                    ClientToken=request.client_token,
                    TagSpecifications=[{"ResourceType": "launch-template",
                                        "Tags": _fleet_tags(request)}])["LaunchTemplate"]
            return lt["LaunchTemplateId"], str(lt["LatestVersionNumber"]), True
        except InvalidRequestError as e:
            if not e.code.endswith("AlreadyExistsException"):
                raise
        with aws_errors("ec2.CreateLaunchTemplateVersion"):
            v = ec2.create_launch_template_version(
                LaunchTemplateName=name, LaunchTemplateData=datas[0],
                ClientToken=request.client_token)["LaunchTemplateVersion"]
        return v["LaunchTemplateId"], str(v["VersionNumber"]), False

    template_id, version, created = launch_with_retries(
        first, lambda: None, what="ec2.CreateLaunchTemplate", notify=notify)
    versions = [version]
    try:
        for n, data in enumerate(datas[1:], start=2):
            def more(data: dict[str, Any] = data, n: int = n) -> str:
                with aws_errors("ec2.CreateLaunchTemplateVersion"):
                    return str(ec2.create_launch_template_version(
                        LaunchTemplateId=template_id, LaunchTemplateData=data,
                        ClientToken=f"{request.client_token}-{n}")[
                            "LaunchTemplateVersion"]["VersionNumber"])
            versions.append(launch_with_retries(more, lambda: None,
                                                what="ec2.CreateLaunchTemplateVersion",
                                                notify=notify))
    except BaseException:
        if created:
            _delete_template(ec2, template_id)
        raise
    return template_id, versions, created


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
    template_id, [version], created = _put_templates(ec2, request,
                                                     [launch_template_data(request)],
                                                     notify=notify)
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


def _valid_until(value: Any) -> datetime | None:
    """A fleet's ``ValidUntil`` as an aware UTC datetime (botocore parses it), or None."""
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc) if value.tzinfo else \
            value.replace(tzinfo=timezone.utc)
    return None


def live_fleets(ec2: Any, annex_name: str) -> list[tuple[str, datetime | None]]:
    """The annex's Spot Fleet requests not cancelled and EC2 Fleets not deleted (exact tag),
    each with its ``ValidUntil`` (None when it has none or the cloud does not echo it).

    Raises:
        ProviderError: a call failed.
    """
    found: list[tuple[str, datetime | None]] = []
    with aws_errors("ec2.DescribeSpotFleetRequests"):
        for page in ec2.get_paginator("describe_spot_fleet_requests").paginate():
            for f in page.get("SpotFleetRequestConfigs", []):
                if not f.get("SpotFleetRequestState", "").startswith("cancelled") \
                        and _tagged(f.get("Tags"), annex_name):
                    found.append((f["SpotFleetRequestId"], _valid_until(
                        f.get("SpotFleetRequestConfig", {}).get("ValidUntil"))))
    with aws_errors("ec2.DescribeFleets"):
        for page in ec2.get_paginator("describe_fleets").paginate():
            for f in page.get("Fleets", []):
                if not f.get("FleetState", "").startswith("deleted") \
                        and _tagged(f.get("Tags"), annex_name):
                    found.append((f["FleetId"], _valid_until(f.get("ValidUntil"))))
    return found


def annex_launch_templates(ec2: Any, annex_name: str) -> list[str]:
    """Ids of the annex's launch template (``annex-<name>``; none or one)."""
    return _annex_templates(ec2, annex_name)


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
