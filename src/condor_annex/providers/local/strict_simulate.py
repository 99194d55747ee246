"""IAM SimulatePrincipalPolicy of a user or role's own policies (a gateway strict rule).

AWS's policy simulator evaluates, for each action name against each resource ARN of the request
(``ResourceArns``, default ``*``), the policies of the principal ``PolicySourceArn``: for a
user, its inline and attached managed policies and those of its groups; for a role, its inline
and attached ones; and the principal's permissions boundary
(docs.aws.amazon.com/IAM/latest/APIReference/API_SimulatePrincipalPolicy.html).  The decision
of each pair is ``allowed``, ``explicitDeny`` or ``implicitDeny``, after IAM's evaluation logic:
an explicit Deny in any policy wins; else an Allow in an identity policy is needed, and an Allow
in the boundary too when there is one
(docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html).  A
principal IAM does not know is answered ``NoSuchEntity`` (404).

moto does not implement the operation.  This rule answers it from the policies in moto's IAM,
with :func:`condor_annex.providers.local.strict_iam.evaluate` (Action / NotAction, Resource /
NotResource with ``*`` and ``?``; a statement with a Condition is not understood: fails closed,
so an Allow with a condition allows nothing and a Deny with one denies).  Kept to what
``check-setup --preflight`` asks: no ``PolicyInputList``, ``ContextEntries`` or resource
policies; ``MaxItems`` / ``Marker`` paging is not done (every result in one page).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any
from xml.sax.saxutils import escape

from condor_annex.providers.local.gateway_call import Call
from condor_annex.providers.local.gateway_replies import Reply, error_reply
from condor_annex.providers.local.gateway_strict import StrictRule
from condor_annex.providers.local.strict_iam import RoleBundleAccess, _document, evaluate

log = logging.getLogger(__name__)
_NS = "https://iam.amazonaws.com/doc/2010-05-08/"


def _members(call: Call, prefix: str) -> list[str]:
    """Values of query-protocol list parameter ``prefix`` (``ActionNames.member.N``), in
    order."""
    found = []
    for key, value in call.params:
        if key.startswith(prefix + ".member."):
            found.append((int(key.rsplit(".", 1)[1]), value))
    return [v for _, v in sorted(found)]


def decision(identity: list[dict], boundary: dict | None, action: str, resource: str,
             where: str = "") -> str:
    """``allowed``, ``explicitDeny`` or ``implicitDeny`` of (action, resource) under identity
    policy documents and an optional permissions boundary document."""
    verdict = evaluate(identity, action, resource, where=where)
    if verdict == "deny":
        return "explicitDeny"
    if verdict == "none":
        return "implicitDeny"
    if boundary is not None:
        bounded = evaluate([boundary], action, resource, where=where + " boundary")
        if bounded == "deny":
            return "explicitDeny"
        if bounded == "none":
            return "implicitDeny"
    return "allowed"


class PolicySimulation(StrictRule):
    """The rule of the module docstring."""

    def answer(self, call: Call, body: bytes) -> Reply | None:
        """Answer SimulatePrincipalPolicy; None (forward) for every other request."""
        if call.service != "iam" or call.operation != "SimulatePrincipalPolicy":
            return None
        arn = call.param("PolicySourceArn") or ""
        actions = _members(call, "ActionNames")
        resources = _members(call, "ResourceArns") or ["*"]
        kind, _, name = arn.split(":", 5)[-1].partition("/")
        name = name.rsplit("/", 1)[-1]
        iam = self.gateway.upstream_client("iam", call.region or "us-east-1")
        try:
            if kind == "user":
                identity, boundary = self._user_policies(iam, name)
            elif kind == "role":
                identity, boundary = RoleBundleAccess(self.gateway)._policies(name, call.region)
            else:
                return error_reply(call, "InvalidInput", f"Invalid ARN: {arn}", 400)
        except Exception as e:  # noqa: BLE001 - the principal does not exist in IAM
            if "NoSuchEntity" in str(e):
                return error_reply(call, "NoSuchEntity", f"The {kind} with name {name} "
                                   "cannot be found.", 404)
            raise
        rows = []
        for action in actions:
            for resource in resources:
                d = decision(identity, boundary, action, resource, where=arn)
                rows.append(f"<member><EvalActionName>{escape(action)}</EvalActionName>"
                            f"<EvalResourceName>{escape(resource)}</EvalResourceName>"
                            f"<EvalDecision>{d}</EvalDecision><MatchedStatements/>"
                            "<MissingContextValues/></member>")
        body_out = (f'<SimulatePrincipalPolicyResponse xmlns="{_NS}">'
                    "<SimulatePrincipalPolicyResult><IsTruncated>false</IsTruncated>"
                    f"<EvaluationResults>{''.join(rows)}</EvaluationResults>"
                    "</SimulatePrincipalPolicyResult><ResponseMetadata><RequestId>"
                    f"{uuid.uuid4()}</RequestId></ResponseMetadata>"
                    "</SimulatePrincipalPolicyResponse>")
        return 200, [("Content-Type", "text/xml")], body_out.encode()

    def _user_policies(self, iam: Any, user: str) -> tuple[list[dict], dict | None]:
        """(identity documents, boundary document or None) of IAM user ``user``: its inline
        and attached policies and those of its groups."""
        docs = []
        for page in iam.get_paginator("list_user_policies").paginate(UserName=user):
            for name in page.get("PolicyNames", []):
                docs.append(_document(iam.get_user_policy(UserName=user, PolicyName=name)[
                    "PolicyDocument"]))
        for page in iam.get_paginator("list_attached_user_policies").paginate(UserName=user):
            for attached in page.get("AttachedPolicies", []):
                docs.append(RoleBundleAccess._managed(iam, attached["PolicyArn"]))
        for group in iam.list_groups_for_user(UserName=user)["Groups"]:
            g = group["GroupName"]
            for name in iam.list_group_policies(GroupName=g)["PolicyNames"]:
                docs.append(_document(iam.get_group_policy(GroupName=g, PolicyName=name)[
                    "PolicyDocument"]))
            for attached in iam.list_attached_group_policies(GroupName=g)["AttachedPolicies"]:
                docs.append(RoleBundleAccess._managed(iam, attached["PolicyArn"]))
        arn = (iam.get_user(UserName=user)["User"].get("PermissionsBoundary") or {}).get(
            "PermissionsBoundaryArn")
        return docs, (RoleBundleAccess._managed(iam, arn) if arn else None)
