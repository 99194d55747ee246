"""Each annex's own IAM role and instance profile, so that an instance of annex A cannot read
annex B's bundle (and its pool token).

AWS has no policy variable for an EC2 instance's own tags, so the bundle an instance may read
cannot be expressed in one shared instance role; each annex gets its own:

* role ``condor-annex-<annex>`` under path ``/condor-annex/annex/``, trusting
  ``ec2.amazonaws.com``, tagged ``htcondor:AnnexName``, ``htcondor:ConfigBucket`` (the
  agent's fallback for finding the bucket) and ``htcondor:AnnexOwner`` (the user's identity),
  with the stack's managed policy
  ``AnnexInstanceBoundary`` (path ``/condor-annex/``) as its permissions boundary;
* one inline policy ``condor-annex-bundle`` allowing exactly ``s3:GetObject`` on
  ``arn:aws:s3:::<bucket>/config-<annex>.tar.gz`` and on ``agent/*`` (the agent zipapp the
  bootstrap fetches), ``s3:PutObject`` on ``logs/<annex>/*`` only (where a failed boot
  uploads the agent's log, :mod:`condor_annex.providers.aws.agent_log`: never another annex's
  prefix, and no read of any log), ``ec2:DescribeTags`` (the agent's fallback
  when instance metadata tags are off; it takes no resource) and ``iam:GetInstanceProfile`` /
  ``iam:ListRoleTags`` on its own profile and role (the agent's bucket fallback);
* an instance profile of the same name and path holding that role, tagged
  ``htcondor:AnnexName`` and ``htcondor:AnnexOwner``.

``create`` makes them after the lease and before the launch (so a kill -9 leaves a lease that
ends them); ending an annex (``off``, a create's rollback, the lease function) deletes them after
its instances and bundle, before the lease.

IAM permissions the user (the CLI's credentials) needs for this, beyond setup's:
``cloudformation:ListStackResources`` on the stack, ``iam:CreateRole`` (with ``iam:PermissionsBoundary`` = the boundary policy, which a careful
administrator makes a condition), ``iam:PutRolePolicy``, ``iam:TagRole``,
``iam:CreateInstanceProfile``, ``iam:TagInstanceProfile``, ``iam:AddRoleToInstanceProfile``,
``iam:GetInstanceProfile``, ``iam:PassRole``, ``iam:RemoveRoleFromInstanceProfile``,
``iam:DeleteInstanceProfile``, ``iam:DeleteRolePolicy`` and ``iam:DeleteRole``, all on
``arn:aws:iam::<account>:role/condor-annex/annex/*`` and
``arn:aws:iam::<account>:instance-profile/condor-annex/annex/*``.

IAM is global: two annexes of the same name in two regions of one account share the role.
"""

from __future__ import annotations

import json
from typing import Any

from condor_annex.config import AwsSettings
from condor_annex.errors import InvalidRequestError, NotFoundError, NotSetUpError
from condor_annex.model import TAG_ANNEX_NAME, TAG_ANNEX_OWNER, SetupOutputs, bundle_key
from condor_annex.providers.aws.agent_log import LOGS_PREFIX
from condor_annex.providers.aws.errors import aws_errors
from condor_annex.providers.aws.session import make_client

#: IAM path of every annex's role and instance profile (the lease function may delete these).
ROLE_PATH = "/condor-annex/annex/"
#: The inline policy of an annex's role.
POLICY_NAME = "condor-annex-bundle"
#: Logical id of the stack's permissions boundary of annex roles.
BOUNDARY_RESOURCE = "AnnexInstanceBoundary"
#: Tag naming the config bucket (the agent's fallback, as on setup's shared role).
TAG_CONFIG_BUCKET = "htcondor:ConfigBucket"

TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
}


def role_name(annex_name: str) -> str:
    """``condor-annex-<annex>``: the annex's role and instance profile (at most 40 characters:
    annex names have at most 27)."""
    return f"condor-annex-{annex_name}"


def _arn_parts(outputs: SetupOutputs) -> tuple[str, str]:
    """(partition, account) of the account setup ran in, from its scheduler role's ARN
    (``arn:<partition>:iam::<account>:role/...``)."""
    parts = outputs.scheduler_role_arn.split(":")
    return parts[1], parts[4]


def boundary_arn(settings: AwsSettings, outputs: SetupOutputs) -> str:
    """ARN of the stack's permissions boundary for annex roles (its managed policy
    ``AnnexInstanceBoundary``, path ``/condor-annex/``): CloudFormation ListStackResources,
    whose physical id of an ``AWS::IAM::ManagedPolicy`` is its ARN.

    Raises:
        NotSetUpError: the stack has no such resource (made before annexes had their own role:
            run ``condor_annex setup`` again).
        ProviderError: the call failed.
    """
    try:
        with aws_errors("cloudformation.ListStackResources"):
            pages = make_client(settings, "cloudformation").get_paginator(
                "list_stack_resources").paginate(StackName=outputs.stack_name)
            arn = next((r.get("PhysicalResourceId", "") for page in pages
                        for r in page.get("StackResourceSummaries", [])
                        if r.get("LogicalResourceId") == BOUNDARY_RESOURCE), "")
    except (NotFoundError, InvalidRequestError):
        arn = ""
    if not arn.startswith("arn:"):
        raise NotSetUpError(f"setup: stack {outputs.stack_name} has no {BOUNDARY_RESOURCE} "
                            "(annexes now get a role of their own); run 'condor_annex setup'")
    return arn


def role_policy(outputs: SetupOutputs, annex_name: str) -> dict[str, Any]:
    """The inline policy of the annex's role (a policy document, as PutRolePolicy takes it)."""
    partition, account = _arn_parts(outputs)
    name = role_name(annex_name)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadOwnBundle", "Effect": "Allow", "Action": "s3:GetObject",
             "Resource": f"arn:{partition}:s3:::{outputs.bucket}/{bundle_key(annex_name)}"},
            # The bootstrap fetches the agent zipapp (no secret in it) with this role.
            {"Sid": "ReadAgent", "Effect": "Allow", "Action": "s3:GetObject",
             "Resource": f"arn:{partition}:s3:::{outputs.bucket}/agent/*"},
            # A failed boot uploads the agent's log under the annex's own prefix (annex
            # names have no '/', '*' or '?': logs/a/* never reaches annex "ab"'s logs).
            {"Sid": "WriteOwnLogs", "Effect": "Allow", "Action": "s3:PutObject",
             "Resource": f"arn:{partition}:s3:::{outputs.bucket}/{LOGS_PREFIX}{annex_name}/*"},
            {"Sid": "OwnTags", "Effect": "Allow", "Action": "ec2:DescribeTags",
             "Resource": "*"},
            {"Sid": "FindBucket", "Effect": "Allow",
             "Action": ["iam:GetInstanceProfile", "iam:ListRoleTags"],
             "Resource": [f"arn:{partition}:iam::{account}:instance-profile{ROLE_PATH}{name}",
                          f"arn:{partition}:iam::{account}:role{ROLE_PATH}{name}"]},
        ],
    }


def ensure_annex_role(settings: AwsSettings, outputs: SetupOutputs, annex_name: str,
                      owner: str = "") -> str:
    """The annex's instance profile ARN, making the role, its policy and the profile when
    missing (IAM GetInstanceProfile; then CreateRole, PutRolePolicy, CreateInstanceProfile,
    AddRoleToInstanceProfile, each tolerating ``EntityAlreadyExists``, so a create killed
    part-way is finished by the next).  A profile that holds the role is reused untouched (an
    add to an existing annex: one call).  A launch right after may meet IAM's propagation delay
    ("Invalid IAM Instance Profile"): the launch retries wait it out.  ``owner`` (the user's
    identity) becomes tag ``htcondor:AnnexOwner`` of the role and profile it makes.

    Raises:
        ProviderError: an IAM call failed (AuthError: the user lacks the IAM permissions listed
            in the module docstring).
    """
    iam = make_client(settings, "iam")
    name = role_name(annex_name)
    profile = _profile(iam, name)
    if profile is not None and any(r["RoleName"] == name for r in profile.get("Roles", [])):
        return profile["Arn"]
    tags = [{"Key": TAG_ANNEX_NAME, "Value": annex_name},
            {"Key": TAG_CONFIG_BUCKET, "Value": outputs.bucket}]
    owned = [{"Key": TAG_ANNEX_OWNER, "Value": owner}] if owner else []
    try:
        with aws_errors("iam.CreateRole"):
            iam.create_role(RoleName=name, Path=ROLE_PATH,
                            AssumeRolePolicyDocument=json.dumps(TRUST_POLICY),
                            PermissionsBoundary=boundary_arn(settings, outputs),
                            Tags=tags + owned,
                            Description=f"condor-annex: instances of annex {annex_name}")
    except InvalidRequestError as e:
        if e.code != "EntityAlreadyExists":
            raise
    with aws_errors("iam.PutRolePolicy"):
        iam.put_role_policy(RoleName=name, PolicyName=POLICY_NAME,
                            PolicyDocument=json.dumps(role_policy(outputs, annex_name)))
    if profile is None:
        try:
            with aws_errors("iam.CreateInstanceProfile"):
                profile = iam.create_instance_profile(InstanceProfileName=name, Path=ROLE_PATH,
                                                      Tags=tags[:1] + owned)[
                                                          "InstanceProfile"]
        except InvalidRequestError as e:
            if e.code != "EntityAlreadyExists":
                raise
            profile = _profile(iam, name)
    if not any(r["RoleName"] == name for r in (profile or {}).get("Roles", [])):
        try:
            with aws_errors("iam.AddRoleToInstanceProfile"):
                iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
        except InvalidRequestError as e:
            if e.code != "LimitExceeded":   # it holds a role already (a lost reply)
                raise
    if profile is None:
        profile = _profile(iam, name) or {}
    return profile["Arn"]


def delete_annex_role(settings: AwsSettings, annex_name: str) -> bool:
    """Delete the annex's instance profile and role (IAM RemoveRoleFromInstanceProfile,
    DeleteInstanceProfile, DeleteRolePolicy, DeleteRole; ``NoSuchEntity`` is fine at each
    step).  Call it once the annex's instances are terminated.

    Returns:
        True when something was deleted.

    Raises:
        ProviderError: an IAM call failed other than "not found".
    """
    iam = make_client(settings, "iam")
    name = role_name(annex_name)
    deleted = False
    for op, call, kwargs in (
            ("RemoveRoleFromInstanceProfile", iam.remove_role_from_instance_profile,
             {"InstanceProfileName": name, "RoleName": name}),
            ("DeleteInstanceProfile", iam.delete_instance_profile,
             {"InstanceProfileName": name}),
            ("DeleteRolePolicy", iam.delete_role_policy,
             {"RoleName": name, "PolicyName": POLICY_NAME}),
            ("DeleteRole", iam.delete_role, {"RoleName": name})):
        try:
            with aws_errors(f"iam.{op}"):
                call(**kwargs)
            deleted = True
        except NotFoundError:
            pass
    return deleted


def delete_stack_annex_roles(settings: AwsSettings, outputs: SetupOutputs) -> list[str]:
    """Delete every annex role of this setup (path ``/condor-annex/annex/``, tag
    ``htcondor:ConfigBucket`` = its bucket) with its instance profile: IAM ListRoles (paginated),
    ListRoleTags, then :func:`delete_annex_role`.  For ``setup --remove``.

    Returns:
        the annex names whose role was deleted.

    Raises:
        ProviderError: an IAM call failed.
    """
    iam = make_client(settings, "iam")
    names = []
    with aws_errors("iam.ListRoles"):
        roles = [r["RoleName"] for page in iam.get_paginator("list_roles").paginate(
            PathPrefix=ROLE_PATH) for r in page.get("Roles", []) if r.get("Path") == ROLE_PATH]
    for role in roles:
        with aws_errors("iam.ListRoleTags"):
            tags = {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=role)["Tags"]}
        annex = tags.get(TAG_ANNEX_NAME, "")
        if tags.get(TAG_CONFIG_BUCKET) == outputs.bucket and role == role_name(annex):
            delete_annex_role(settings, annex)
            names.append(annex)
    return names


def _profile(iam: Any, name: str) -> dict | None:
    try:
        with aws_errors("iam.GetInstanceProfile"):
            return iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except NotFoundError:
        return None
