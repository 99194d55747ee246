"""IAM's eventual consistency for instance profiles (a gateway strict rule).

"IAM ... achieves high availability by replicating data across multiple servers ... some changes
might not be immediately visible": right after CreateInstanceProfile / AddRoleToInstanceProfile
(or a stack that made the profile), EC2 launches naming the profile fail with
``InvalidParameterValue`` "Value (NAME) for parameter iamInstanceProfile.name is invalid.
Invalid IAM Instance Profile name" (docs.aws.amazon.com/IAM/latest/UserGuide/
troubleshoot_general.html#troubleshoot_general_eventual-consistency,
docs.aws.amazon.com/AWSEC2/latest/UserGuide/iam-roles-for-amazon-ec2.html).  moto knows the
profile at once.

The gateway records, on its clock, when it forwarded a successful CreateInstanceProfile or
AddRoleToInstanceProfile, and — for profiles a stack made — when it forwarded the stack's
CreateStack / UpdateStack (the profile's CreateDate, read through IAM, when it is recent).  For
``Gateway.profile_age_s`` seconds after that (default 5 s), a RunInstances naming the profile
(directly or through its launch template), a CreateFleet whose launch template names it, or a
RequestSpotFleet whose launch specifications or templates name it, is refused with that error
(for fleets, EC2 reports the failure in the fleet's errors or history; the local cloud refuses
the whole request instead, which a launch retry handles the same way).  A profile made behind
the gateway's back (straight on moto) counts as old: its age is unknown.

The same rule answers RemoveRoleFromInstanceProfile for a role the profile does not hold as IAM
does, ``NoSuchEntity`` (404; docs.aws.amazon.com/IAM/latest/APIReference/
API_RemoveRoleFromInstanceProfile.html); moto fails it with an HTTP 500 page.  A create killed
between CreateInstanceProfile and AddRoleToInstanceProfile leaves exactly such a profile; and
two removals at once (``off`` and the lease function ending one annex) both pass the check
before moto sees them, so a 500 from moto for that call is checked again afterwards and, the
role being out of the profile by then, answered ``NoSuchEntity`` too.
"""

from __future__ import annotations

import logging
import threading

from condor_annex.providers.local.gateway_call import Call
from condor_annex.providers.local.gateway_replies import Reply, error_reply
from condor_annex.providers.local.gateway_strict import Refusal, StrictRule

log = logging.getLogger(__name__)

_LAUNCHES = ("RunInstances", "CreateFleet", "RequestSpotFleet")


def _profile_name(arn: str) -> str:
    """``arn:aws:iam::123:instance-profile/path/name`` → ``name``."""
    return arn.rsplit("/", 1)[-1]


class ProfilePropagation(StrictRule):
    """The rule of the module docstring.

    Attributes:
        created: profile name → when it last changed (gateway clock, seconds).
    """

    def __init__(self, gateway) -> None:
        super().__init__(gateway)
        self._lock = threading.Lock()
        self.created: dict[str, float] = {}

    def _young(self) -> dict[str, float]:
        """Profiles still propagating: name → seconds left."""
        age_s, now = self.gateway.profile_age_s, self.gateway.clock()
        with self._lock:
            return {n: t + age_s - now for n, t in self.created.items() if now - t < age_s}

    # records --------------------------------------------------------------------------------

    def after(self, call: Call, reply: Reply) -> Reply:
        if reply[0] >= 500 and call.service == "iam" and \
                call.operation == "RemoveRoleFromInstanceProfile":
            # Two removals at once (an off and the lease function ending the same annex)
            # both pass the check in before(); moto then fails the second with a 500 page.
            # Once the role is out of the profile, IAM's answer to the second is NoSuchEntity.
            refusal = self._not_in_profile(call)
            if refusal is not None:
                return error_reply(call, *refusal)
        if reply[0] != 200:
            return reply
        if call.service == "iam" and call.operation in ("CreateInstanceProfile",
                                                         "AddRoleToInstanceProfile"):
            name = call.param("InstanceProfileName")
            if name:
                with self._lock:
                    self.created[name] = self.gateway.clock()
        elif call.service == "cloudformation" and call.operation in ("CreateStack",
                                                                     "UpdateStack"):
            self._record_stack_profiles(call)
        return reply

    def _record_stack_profiles(self, call: Call) -> None:
        """Record the instance profiles a stack just made (moto's CloudFormation is
        synchronous: they exist when CreateStack answers)."""
        cfn = self.gateway.upstream_client("cloudformation", call.region)
        iam = self.gateway.upstream_client("iam", call.region)
        try:
            resources = cfn.list_stack_resources(StackName=call.param("StackName") or "")[
                "StackResourceSummaries"]
        except Exception:  # noqa: BLE001 - no stack, no profile to record
            return
        wall_now, now = self.gateway.wall(), self.gateway.clock()
        for res in resources:
            if res.get("ResourceType") != "AWS::IAM::InstanceProfile":
                continue
            name = res.get("PhysicalResourceId", "")
            try:
                created = iam.get_instance_profile(InstanceProfileName=name)[
                    "InstanceProfile"]["CreateDate"].timestamp()
            except Exception:  # noqa: BLE001
                continue
            age_s = max(0.0, wall_now - created)
            if age_s < self.gateway.profile_age_s:
                with self._lock:
                    self.created[name] = max(self.created.get(name, 0.0), now - age_s)

    def forget(self) -> None:
        with self._lock:
            self.created.clear()

    # checks ---------------------------------------------------------------------------------

    def before(self, call: Call) -> Refusal | None:
        if call.service == "iam" and call.operation == "RemoveRoleFromInstanceProfile":
            return self._not_in_profile(call)
        if call.service != "ec2" or call.operation not in _LAUNCHES:
            return None
        young = self._young()
        if not young:
            return None   # the common case: no launch template look-up
        for param, value in self._profiles_named(call):
            name = _profile_name(value) if param == "arn" else value
            if name in young:
                kind = "ARN" if param == "arn" else "name"
                return ("InvalidParameterValue",
                        f"Value ({value}) for parameter iamInstanceProfile.{param} is invalid. "
                        f"Invalid IAM Instance Profile {kind}", 400)
        return None

    def _not_in_profile(self, call: Call) -> Refusal | None:
        """IAM's answer for a role that is not in the profile (moto's is a 500 page)."""
        profile, role = call.param("InstanceProfileName"), call.param("RoleName")
        iam = self.gateway.upstream_client("iam", call.region)
        try:
            roles = iam.get_instance_profile(InstanceProfileName=profile or "")[
                "InstanceProfile"]["Roles"]
        except Exception:  # noqa: BLE001 - no such profile: moto answers NoSuchEntity itself
            return None
        if any(r.get("RoleName") == role for r in roles):
            return None
        return ("NoSuchEntity", f"The role with name {role} cannot be found in instance "
                                f"profile {profile}.", 404)

    def _profiles_named(self, call: Call) -> list[tuple[str, str]]:
        """``("name"|"arn", value)`` of every instance profile a launch request names, directly
        or through its launch templates."""
        out, templates = [], {}
        for key, value in call.params:
            last = key.rsplit(".", 2)
            if len(last) >= 2 and last[-2] == "IamInstanceProfile" and last[-1] in ("Name",
                                                                                    "Arn"):
                out.append((last[-1].lower(), value))
            elif ".LaunchTemplate" in "." + key:
                # RunInstances: LaunchTemplate.X; fleets: ...LaunchTemplateSpecification.X
                head, _, field = key.rpartition(".")
                if field in ("LaunchTemplateId", "LaunchTemplateName", "Version"):
                    templates.setdefault(head, {})[field] = value
        ec2 = self.gateway.upstream_client("ec2", call.region)
        for spec in templates.values():
            ident = {k: v for k, v in spec.items() if k != "Version"}
            if not ident:
                continue
            try:
                data = ec2.describe_launch_template_versions(
                    **ident, Versions=[spec.get("Version", "$Default")])[
                    "LaunchTemplateVersions"][0]["LaunchTemplateData"]
            except Exception:  # noqa: BLE001 - moto answers for a template it cannot find
                continue
            profile = data.get("IamInstanceProfile") or {}
            for field in ("Name", "Arn"):
                if profile.get(field):
                    out.append((field.lower(), profile[field]))
        return out
