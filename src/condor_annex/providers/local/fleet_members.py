"""What fleet members get from their fleet on EC2 and moto leaves out.

moto launches Spot Fleet and EC2 Fleet members without the launch specification's (or launch
template's) instance profile, and with shutdown behaviour *stop* (tests/aws/test_fleet.py
documents both gaps).  On EC2 every member has them, so the local cloud reads each fleet back
(:func:`fleet_launch_settings`) and applies its profile and shutdown behaviour to its members
(:func:`with_fleet_launch_settings`): Spot Fleet members terminate on shutdown (one-time Spot),
EC2 Fleet members do what the template says.
"""

from __future__ import annotations

from typing import Any

#: instance id -> (the instance profile its fleet gives it, or None; its shutdown behaviour,
#: ``"terminate"`` or ``"stop"``).
FleetSettings = dict[str, tuple[dict | None, str]]


def fleet_launch_settings(ec2: Any) -> FleetSettings:
    """Each current fleet member's instance profile and shutdown behaviour, from its fleet
    (DescribeSpotFleetRequests + DescribeSpotFleetInstances, DescribeFleets +
    DescribeFleetInstances, DescribeLaunchTemplateVersions).

    Args:
        ec2: a boto3 EC2 client of the local cloud's endpoint.
    """
    settings: FleetSettings = {}
    templates: dict[tuple[str, str], dict] = {}

    def template_data(lt: dict) -> dict:
        key = (lt.get("LaunchTemplateId", ""), str(lt.get("Version") or "$Latest"))
        if key not in templates:
            try:
                ref = {"LaunchTemplateId": key[0]} if key[0] else \
                    {"LaunchTemplateName": lt.get("LaunchTemplateName", "")}
                templates[key] = ec2.describe_launch_template_versions(
                    **ref, Versions=[key[1]])["LaunchTemplateVersions"][0][
                    "LaunchTemplateData"]
            except Exception:  # noqa: BLE001 - the template was deleted
                templates[key] = {}
        return templates[key]

    for page in ec2.get_paginator("describe_spot_fleet_requests").paginate():
        for sfr in page.get("SpotFleetRequestConfigs", []):
            config = sfr.get("SpotFleetRequestConfig", {})
            specs = config.get("LaunchSpecifications", [])
            lt_configs = config.get("LaunchTemplateConfigs", [])
            members = ec2.describe_spot_fleet_instances(
                SpotFleetRequestId=sfr["SpotFleetRequestId"]).get("ActiveInstances", [])
            for member in members:
                if lt_configs:   # the launch template carries the profile
                    data = template_data(lt_configs[0].get("LaunchTemplateSpecification",
                                                           {}))
                    settings[member["InstanceId"]] = (data.get("IamInstanceProfile"),
                                                      "terminate")
                    continue
                spec = next((s for s in specs if s.get("InstanceType")
                             == member.get("InstanceType")), specs[0] if specs else {})
                settings[member["InstanceId"]] = (spec.get("IamInstanceProfile"),
                                                  "terminate")
    for page in ec2.get_paginator("describe_fleets").paginate():
        for fleet in page.get("Fleets", []):
            groups = [(g.get("LaunchTemplateAndOverrides", {}).get(
                "LaunchTemplateSpecification", {}), g.get("InstanceIds", []))
                for g in fleet.get("Instances", [])]
            if fleet.get("Type") != "instant" and fleet.get("LaunchTemplateConfigs"):
                # Only instant fleets list their instances in DescribeFleets (API_FleetData);
                # request and maintain fleets answer DescribeFleetInstances.
                active = ec2.describe_fleet_instances(FleetId=fleet["FleetId"]).get(
                    "ActiveInstances", [])
                groups.append((fleet["LaunchTemplateConfigs"][0].get(
                    "LaunchTemplateSpecification", {}),
                    [a["InstanceId"] for a in active]))
            for lt, ids in groups:
                data = template_data(lt)
                for iid in ids:
                    settings[iid] = (data.get("IamInstanceProfile"),
                                     data.get("InstanceInitiatedShutdownBehavior",
                                              "terminate"))
    return settings


def with_fleet_launch_settings(ec2: Any, live: dict[str, dict],
                               shutdown_behaviour: dict[str, str]) -> dict[str, dict]:
    """``live`` (instance id -> DescribeInstances instance) with each fleet member's instance
    profile filled in; records each member's shutdown behaviour in ``shutdown_behaviour``
    (instance id -> ``"terminate"`` / ``"stop"``, what moto does not know)."""
    settings = fleet_launch_settings(ec2)
    out = dict(live)
    for iid, inst in live.items():
        if iid in settings and not inst.get("IamInstanceProfile"):
            profile, behaviour = settings[iid]
            shutdown_behaviour[iid] = behaviour
            if profile:
                out[iid] = {**inst, "IamInstanceProfile": profile}
    return out
