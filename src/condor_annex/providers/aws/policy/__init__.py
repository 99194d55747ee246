"""The least-privilege IAM policy for the user (or role) running ``condor_annex``.

``condor-annex-user.json`` (shipped in the package) allows every action the CLI calls — setup
(CloudFormation, and what CloudFormation does with the caller's credentials to create the
stack's bucket, function, queue, alarm, schedule, rule, roles, boundary policy, instance profile
and security group), create on every launch path (RunInstances, EC2 Fleet, Spot Fleet with its
launch template; each annex's own role and instance profile, PassRole of the instance, scheduler
and Spot Fleet roles), status, extend, off, logs, image build and check-setup with its
preflight — and scopes resources to the names setup and create give them where the action takes
resource-level permissions (docs.aws.amazon.com/service-authorization/latest/reference/
reference_policies_actions-resources-contextkeys.html).  EC2 actions take ``*``: instance and
fleet ids are random, and RunInstances touches images, subnets and network interfaces.

Attach it as a customer managed policy (docs/aws.md, step 1); its size (whitespace not counted)
stays under IAM's 6,144-character limit for managed policies
(docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html).
"""

from __future__ import annotations

import json
from importlib import resources

#: File name of the shipped policy, in this package.
POLICY_FILE = "condor-annex-user.json"


def path() -> str:
    """Filesystem path of the shipped policy (for ``aws iam create-policy --policy-document
    file://...``)."""
    return str(resources.files(__package__).joinpath(POLICY_FILE))


def load() -> dict:
    """The shipped policy document (IAM JSON policy grammar, ``Version`` 2012-10-17)."""
    return json.loads(resources.files(__package__).joinpath(POLICY_FILE).read_text())


def _listed(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def actions(document: dict) -> list[str]:
    """Every action the document allows (``service:Action``), sorted, without duplicates."""
    return sorted({a for s in document["Statement"] if s.get("Effect") == "Allow"
                   for a in _listed(s["Action"])})


def concrete_arn(pattern: str, account: str, region: str) -> str:
    """A concrete ARN the resource pattern ``pattern`` covers, in ``account`` and ``region``:
    ``*`` in the region and account fields become them, any other ``*`` becomes ``example``
    (``"*"`` itself stays ``"*"``, the simulator's "every resource")."""
    if pattern == "*":
        return pattern
    parts = pattern.split(":", 5)
    if len(parts) == 6:
        if parts[3] == "*":
            parts[3] = region
        if parts[4] == "*":
            parts[4] = account
        parts[5] = parts[5].replace("*", "example")
    return ":".join(parts)


def simulation_batches(document: dict, account: str, region: str
                       ) -> list[tuple[list[str], list[str]]]:
    """(action names, resource ARNs) per Allow statement, for IAM SimulatePrincipalPolicy: each
    statement's actions against a concrete ARN of each of its resources."""
    out = []
    for s in document["Statement"]:
        if s.get("Effect") != "Allow":
            continue
        out.append((sorted(_listed(s["Action"])),
                    [concrete_arn(r, account, region) for r in _listed(s["Resource"])]))
    return out
