"""Orphans: what a user's annexes left that nothing will end.

:func:`inventory` lists every resource of every annex in the region and account, of any owner,
one listing per kind (each paginated):

=================== ==================================================== =====================
kind                found by                                             created
=================== ==================================================== =====================
instance            DescribeInstances, tag key ``htcondor:AnnexName``,   ``LaunchTime``
                    pending/running/stopping/stopped
fleet               DescribeFleets (not deleted), the annex tag          ``CreateTime``
spot-fleet-request  DescribeSpotFleetRequests (not cancelled), the tag   ``CreateTime``
launch-template     DescribeLaunchTemplates, the annex tag               ``CreateTime``
schedule            ListSchedules (``annex-lease-``), GetSchedule whose  ``CreationDate``
                    target is this setup's lease function
bundle              ListObjectsV2 (``config-*.tar.gz``), GetObjectTagging ``LastModified``
role                ListRoles (path ``/condor-annex/annex/``),           ``CreateDate``
                    ListRoleTags (the annex's role and instance profile)
=================== ==================================================== =====================

Each resource's owner is its tag ``htcondor:AnnexOwner``.  A lease schedule takes no tags
(Scheduler's CreateSchedule has no ``Tags``; only schedule groups are taggable), so its owner is
the event's ``AnnexOwner``; a schedule made before that field takes the owner of the annex's
other resources when they all have one.  A role of another setup (its ``htcondor:ConfigBucket``
names another bucket: IAM is global, setups are regional) and a bundle without tags have no
owner here.

:func:`decide` (pure) says which of one owner's resources are orphans.  An annex's resources are
orphans when the annex has no live lease (no schedule, or its time has passed) and either the
state store does not know it or its lease has passed (its schedule's time, or its
``htcondor:LeaseEnd`` tags), and only when **all** of these hold:

* every resource of the annex is this owner's (an annex that also holds another owner's or an
  untagged resource is kept and named, since ending an annex ends everything with its name);
* nothing of the annex is younger than the grace (a create in progress is never swept; it makes
  its lease first anyway), and its lease end, when known and passed, passed longer ago than the
  grace (the lease enforcer may be ending it right now).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from condor_annex.config import AwsSettings
from condor_annex.errors import NotFoundError
from condor_annex.model import (TAG_ANNEX_NAME, TAG_ANNEX_OWNER, TAG_CONFIG_BUCKET,
                                TAG_LEASE_END, SetupOutputs, bundle_key)
from condor_annex.providers.aws import annex_role
from condor_annex.providers.aws.errors import aws_errors
from condor_annex.providers.aws.session import make_client

#: Seconds a resource (and a passed lease end) must be old before it may be an orphan.
GRACE_S = 600.0
#: EC2 states of an instance that may cost money or run work.
_LIVE_STATES = ["pending", "running", "stopping", "stopped"]
#: Lease schedules' name prefix (:func:`condor_annex.model.lease_schedule_name`).
_LEASE_PREFIX = "annex-lease-"


@dataclass(frozen=True)
class AnnexResource:
    """One resource of an annex, of any owner.

    Attributes:
        kind: instance, fleet, spot-fleet-request, launch-template, schedule, bundle or role.
        id: the instance, fleet, request or template id, the schedule name, the bundle's S3
            key, or the role name (its instance profile has the same name).
        annex: the annex name (tag ``htcondor:AnnexName``; a schedule's event; a bundle's key).
        owner: tag ``htcondor:AnnexOwner`` (an ARN), or "" when it has none.
        created: when it was made (aware UTC), or None when the cloud does not say.
        lease_end: a schedule's time, or tag ``htcondor:LeaseEnd`` (aware UTC); else None.
        state: an instance's EC2 state name; "" for other kinds.
    """

    kind: str
    id: str
    annex: str
    owner: str
    created: datetime | None = None
    lease_end: datetime | None = None
    state: str = ""


@dataclass(frozen=True)
class Orphan:
    """A resource ``sweep`` ends: ``kind`` and ``id`` as :class:`AnnexResource`, its annex and
    why it is an orphan (e.g. ``"no lease"``, ``"lease ended 2026-01-02T03:04:05Z"``)."""

    kind: str
    id: str
    annex: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        """``{"kind", "id", "annex", "reason"}`` (``sweep --json``)."""
        return {"kind": self.kind, "id": self.id, "annex": self.annex, "reason": self.reason}


@dataclass(frozen=True)
class Decision:
    """What :func:`decide` found: ``orphans`` (in annex, kind, id order) and ``kept``, one line
    per annex holding orphans of this owner that is not swept because it also holds another
    owner's or an untagged resource."""

    orphans: tuple[Orphan, ...] = ()
    kept: tuple[str, ...] = ()


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _epoch(text: str | None) -> datetime | None:
    return datetime.fromtimestamp(int(text), timezone.utc) if text and text.isdigit() else None


def _tags(tags: list[dict[str, str]] | None) -> dict[str, str]:
    return {t.get("Key", ""): t.get("Value", "") for t in tags or ()}


def _tagged(kind: str, rid: str, tags: list[dict[str, str]] | None,
            created: Any, state: str = "") -> AnnexResource | None:
    """The resource when its tags name an annex, else None (not ours: never listed)."""
    have = _tags(tags)
    if not have.get(TAG_ANNEX_NAME):
        return None
    return AnnexResource(kind, rid, have[TAG_ANNEX_NAME], have.get(TAG_ANNEX_OWNER, ""),
                         _utc(created), _epoch(have.get(TAG_LEASE_END)), state)


def _ec2(settings: AwsSettings) -> list[AnnexResource]:
    ec2 = make_client(settings, "ec2")
    found: list[AnnexResource | None] = []
    with aws_errors("ec2.DescribeInstances"):
        for page in ec2.get_paginator("describe_instances").paginate(Filters=[
                {"Name": "tag-key", "Values": [TAG_ANNEX_NAME]},
                {"Name": "instance-state-name", "Values": _LIVE_STATES}]):
            found += [_tagged("instance", i["InstanceId"], i.get("Tags"), i.get("LaunchTime"),
                              i.get("State", {}).get("Name", ""))
                      for r in page.get("Reservations", []) for i in r.get("Instances", [])]
    with aws_errors("ec2.DescribeFleets"):
        for page in ec2.get_paginator("describe_fleets").paginate():
            found += [_tagged("fleet", f["FleetId"], f.get("Tags"), f.get("CreateTime"))
                      for f in page.get("Fleets", [])
                      if not f.get("FleetState", "").startswith("deleted")]
    with aws_errors("ec2.DescribeSpotFleetRequests"):
        for page in ec2.get_paginator("describe_spot_fleet_requests").paginate():
            found += [_tagged("spot-fleet-request", f["SpotFleetRequestId"], f.get("Tags"),
                              f.get("CreateTime"))
                      for f in page.get("SpotFleetRequestConfigs", [])
                      if not f.get("SpotFleetRequestState", "").startswith("cancelled")]
    with aws_errors("ec2.DescribeLaunchTemplates"):
        for page in ec2.get_paginator("describe_launch_templates").paginate(
                Filters=[{"Name": "tag-key", "Values": [TAG_ANNEX_NAME]}]):
            found += [_tagged("launch-template", t["LaunchTemplateId"], t.get("Tags"),
                              t.get("CreateTime"))
                      for t in page.get("LaunchTemplates", [])]
    return [r for r in found if r is not None]


def _schedules(settings: AwsSettings, outputs: SetupOutputs) -> list[AnnexResource]:
    """Lease schedules whose target is this setup's lease function (any other schedule with
    our name prefix is not ours)."""
    sch = make_client(settings, "scheduler")
    with aws_errors("scheduler.ListSchedules"):
        names = [s["Name"] for page in sch.get_paginator("list_schedules").paginate(
            NamePrefix=_LEASE_PREFIX) for s in page.get("Schedules", [])]
    found = []
    for name in names:
        try:
            with aws_errors("scheduler.GetSchedule"):
                s = sch.get_schedule(Name=name)
        except NotFoundError:
            continue   # deleted since the listing
        target = s.get("Target", {})
        if target.get("Arn") != outputs.lease_function_arn:
            continue
        try:
            event = json.loads(target.get("Input") or "{}")
            end = datetime.fromtimestamp(int(event["LeaseExpiration"]), timezone.utc)
        except (ValueError, KeyError, TypeError):
            event, end = {}, None   # unreadable: no known end, so never taken for passed
        annex = str(event.get("AnnexName") or name[len(_LEASE_PREFIX):])
        found.append(AnnexResource("schedule", name, annex, str(event.get("AnnexOwner", "")),
                                   _utc(s.get("CreationDate")), end))
    return found


def _bundles(settings: AwsSettings, outputs: SetupOutputs) -> list[AnnexResource]:
    s3 = make_client(settings, "s3")
    found = []
    with aws_errors("s3.ListObjectsV2"):
        objects = [o for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=outputs.bucket, Prefix="config-") for o in page.get("Contents", [])
            if o["Key"].endswith(".tar.gz")]
    for o in objects:
        annex = o["Key"][len("config-"):-len(".tar.gz")]
        if bundle_key(annex) != o["Key"]:
            continue
        try:
            with aws_errors("s3.GetObjectTagging"):
                tags = _tags(s3.get_object_tagging(Bucket=outputs.bucket,
                                                   Key=o["Key"]).get("TagSet"))
        except NotFoundError:
            continue
        # An untagged bundle is listed with no owner: its annex is then never swept.
        owner = tags.get(TAG_ANNEX_OWNER, "") if tags.get(TAG_ANNEX_NAME) == annex else ""
        found.append(AnnexResource("bundle", o["Key"], annex, owner,
                                   _utc(o.get("LastModified"))))
    return found


def _roles(settings: AwsSettings, outputs: SetupOutputs) -> list[AnnexResource]:
    iam = make_client(settings, "iam")
    with aws_errors("iam.ListRoles"):
        roles = [r for page in iam.get_paginator("list_roles").paginate(
            PathPrefix=annex_role.ROLE_PATH) for r in page.get("Roles", [])
            if r.get("Path") == annex_role.ROLE_PATH]
    found = []
    for role in roles:
        try:
            with aws_errors("iam.ListRoleTags"):
                tags = _tags(iam.list_role_tags(RoleName=role["RoleName"]).get("Tags"))
        except NotFoundError:
            continue
        annex = tags.get(TAG_ANNEX_NAME, "")
        if not annex or role["RoleName"] != annex_role.role_name(annex):
            continue
        # Another setup's (region's) annex of the same name shares the role: no owner here.
        owner = tags.get(TAG_ANNEX_OWNER, "") if tags.get(TAG_CONFIG_BUCKET) == outputs.bucket \
            else ""
        found.append(AnnexResource("role", role["RoleName"], annex, owner,
                                   _utc(role.get("CreateDate"))))
    return found


def inventory(settings: AwsSettings, outputs: SetupOutputs) -> list[AnnexResource]:
    """Every annex resource in the region (and every annex role of the account), of any owner:
    see the module docstring for the calls.  Nothing without an annex tag (or, for schedules,
    without this setup's lease function as target) is listed.

    Raises:
        ProviderError: a listing failed.
    """
    return (_ec2(settings) + _schedules(settings, outputs) + _bundles(settings, outputs)
            + _roles(settings, outputs))


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def decide(resources: list[AnnexResource], owner: str, now: datetime, *,
           grace_s: float = GRACE_S, known: frozenset[str] = frozenset()) -> Decision:
    """Which of ``owner``'s resources are orphans (pure; the rules are in the module
    docstring).

    Args:
        resources: :func:`inventory`'s answer (every owner's).
        owner: the user's identity (an ARN); "" finds nothing.
        now: aware UTC.
        grace_s: seconds a resource and a passed lease end must be old.
        known: annexes the store knows: orphans only once their lease has passed.

    Returns:
        The orphans and the annexes kept because they are shared.
    """
    if not owner:
        return Decision()
    grace = timedelta(seconds=grace_s)
    by_annex: dict[str, list[AnnexResource]] = {}
    for r in resources:
        by_annex.setdefault(r.annex, []).append(r)
    orphans: list[Orphan] = []
    kept: list[str] = []
    for annex, found in sorted(by_annex.items()):
        schedules = [r for r in found if r.kind == "schedule"]
        if any(s.lease_end is None or s.lease_end > now for s in schedules):
            continue   # a live lease (or one whose end cannot be read) ends it on time
        ends = [r.lease_end for r in found if r.lease_end is not None]
        if annex in known and not (schedules or (ends and max(ends) <= now)):
            continue   # the store's annex, its lease not known to have passed
        others = {r.owner for r in found if r.kind != "schedule"}
        # A schedule made before it carried its owner takes the annex's single owner.
        inherited = next(iter(others)) if len(others) == 1 else ""
        owners = [r.owner or (inherited if r.kind == "schedule" else "") for r in found]
        mine = [r for r, o in zip(found, owners) if o == owner]
        if not mine:
            continue
        if any(r.created is not None and now - r.created < grace for r in found) or \
                (ends and max(ends) <= now < max(ends) + grace):
            continue   # in the making, or its lease just passed (the enforcer may be on it)
        if len(mine) < len(found):
            kinds = sorted({r.kind for r, o in zip(found, owners) if o != owner})
            kept.append(f"annex {annex}: not swept: it also holds {', '.join(kinds)} of "
                        "another owner or without an owner tag")
            continue
        if schedules:
            reason = f"lease ended {_iso(max(s.lease_end for s in schedules if s.lease_end))}"
        else:
            reason = "no lease" + (f" (tag htcondor:LeaseEnd says {_iso(max(ends))})"
                                   if ends else "")
        orphans += [Orphan(r.kind, r.id, annex, reason)
                    for r in sorted(mine, key=lambda r: (r.kind, r.id))]
    return Decision(tuple(orphans), tuple(kept))
