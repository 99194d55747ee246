"""IAM policy evaluation for instance roles reading S3 objects (a gateway strict rule).

AWS decides a request of a role's session by its policies: "an explicit deny in any policy
overrides any allows"; otherwise the request needs an Allow in an identity-based policy and, when
the role has a permissions boundary, an Allow in the boundary too; anything not allowed is
implicitly denied (docs.aws.amazon.com/IAM/latest/UserGuide/
reference_policies_evaluation-logic.html).  A statement applies when its ``Action`` matches the
action and its ``Resource`` matches the resource ARN, ``*`` and ``?`` being wildcards
(docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_resource.html), and its
``Condition`` holds.  S3 answers a denied GetObject with 403 ``AccessDenied``
(docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html); HeadObject needs
``s3:GetObject`` too (docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html).

moto checks no Resource nor Condition (``moto/iam/access_control.py``) and by default no policy
at all: every instance could read every annex's bundle.  This rule evaluates S3 GetObject,
HeadObject and PutObject requests signed with an access key the local cloud registered as a role's
(:meth:`Gateway.register_role_key`, the credentials its IMDS hands an instance): the role's
inline policies (ListRolePolicies / GetRolePolicy), its attached managed policies
(ListAttachedRolePolicies / GetPolicy / GetPolicyVersion) and its permissions boundary
(GetRole), read from moto's IAM at each request.  ``Action`` / ``NotAction`` (case-insensitive)
and ``Resource`` / ``NotResource`` (case-sensitive) with wildcards are understood; a statement
with any ``Condition`` is not: it fails closed (an Allow with a condition allows nothing, a Deny
with one denies) and is logged.  A role IAM no longer knows is denied (its credentials no
longer work).  Requests signed with any other key (the CLI user's) are not evaluated here.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import urllib.parse
from typing import Any

from condor_annex.providers.local.gateway_call import Call
from condor_annex.providers.local.gateway_strict import Refusal, StrictRule

log = logging.getLogger(__name__)

#: S3 operations evaluated, and the IAM action each needs.
_ACTIONS = {"GetObject": "s3:GetObject", "HeadObject": "s3:GetObject",
            "PutObject": "s3:PutObject"}
_DENIED: Refusal = ("AccessDenied", "Access Denied", 403)


def _pattern(text: str, *, fold: bool) -> re.Pattern:
    """An IAM wildcard pattern (``*`` any run, ``?`` one character) as a regex."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)
    return re.compile(body, re.DOTALL | (re.IGNORECASE if fold else 0))


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _matches(patterns: list[str], value: str, *, fold: bool) -> bool:
    return any(_pattern(p, fold=fold).fullmatch(value) for p in patterns)


def _document(doc: Any) -> dict:
    """A policy document as IAM returns it (a dict, or URL-encoded / plain JSON text).

    moto's CloudFormation stores an ``AWS::IAM::Role``'s inline ``Policies`` as Python's
    ``repr`` of the dict (single quotes), which GetRolePolicy then returns; IAM itself keeps the
    JSON the template gave.  Such text is read as the Python literal it is (never evaluated)."""
    if isinstance(doc, dict):
        return doc
    text = urllib.parse.unquote(doc) if "%" in doc else doc
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        value = ast.literal_eval(text)
        if not isinstance(value, dict):
            raise
        return value


def statement_applies(stmt: dict, action: str, resource: str) -> bool | None:
    """Whether a policy statement applies to (action, resource): True, False, or None when it
    has a Condition (not understood: the caller fails closed)."""
    if "Action" in stmt:
        if not _matches(_listed(stmt["Action"]), action, fold=True):
            return False
    elif "NotAction" in stmt:
        if _matches(_listed(stmt["NotAction"]), action, fold=True):
            return False
    else:
        return False
    if "Resource" in stmt:
        if not _matches(_listed(stmt["Resource"]), resource, fold=False):
            return False
    elif "NotResource" in stmt:
        if _matches(_listed(stmt["NotResource"]), resource, fold=False):
            return False
    else:
        return False
    if stmt.get("Condition"):
        return None
    return True


def evaluate(documents: list[dict], action: str, resource: str, *,
             where: str = "") -> str:
    """The verdict of a set of policies: ``"deny"`` (an explicit Deny applies, or a Deny has a
    Condition), ``"allow"`` (an Allow applies), else ``"none"`` (implicitly denied).  An Allow
    with a Condition is ignored (fail closed) and logged."""
    allowed = False
    for doc in documents:
        for stmt in _listed_statements(doc):
            applies = statement_applies(stmt, action, resource)
            effect = stmt.get("Effect")
            if applies is None:
                log.warning("strict IAM: %s: a %s statement with a Condition (%s) is not "
                            "evaluated; failing closed for %s on %s", where, effect,
                            json.dumps(stmt.get("Condition")), action, resource)
                if effect == "Deny":
                    return "deny"
                continue
            if applies and effect == "Deny":
                return "deny"
            if applies and effect == "Allow":
                allowed = True
    return "allow" if allowed else "none"


def _listed_statements(doc: dict) -> list[dict]:
    stmts = doc.get("Statement", [])
    return [stmts] if isinstance(stmts, dict) else list(stmts)


class RoleBundleAccess(StrictRule):
    """The rule of the module docstring."""

    def before(self, call: Call) -> Refusal | None:
        if call.service != "s3" or call.operation not in _ACTIONS or not call.access_key:
            return None
        role = self.gateway.role_of_key(call.access_key)
        if role is None:
            return None
        bucket, _, key = call.resource.partition("/")
        resource = f"arn:aws:s3:::{bucket}/{key}"
        action = _ACTIONS[call.operation]
        try:
            identity, boundary = self._policies(role, call.region)
        except Exception as e:  # noqa: BLE001 - a role IAM does not know: its keys fail
            log.warning("strict IAM: role %s: policies unreadable (%s); denying %s on %s",
                        role, e, action, resource)
            return _DENIED
        verdict = evaluate(identity, action, resource, where=f"role {role}")
        if verdict == "allow" and boundary is not None:
            bounded = evaluate([boundary], action, resource,
                               where=f"role {role} permissions boundary")
            verdict = "allow" if bounded == "allow" else "deny"
        if verdict != "allow":
            log.info("strict IAM: role %s may not %s %s", role, action, resource)
            return _DENIED
        return None

    def _policies(self, role: str, region: str) -> tuple[list[dict], dict | None]:
        """(identity policy documents, permissions boundary document or None) of ``role``."""
        iam = self.gateway.upstream_client("iam", region or "us-east-1")
        docs = []
        for page in iam.get_paginator("list_role_policies").paginate(RoleName=role):
            for name in page.get("PolicyNames", []):
                docs.append(_document(iam.get_role_policy(RoleName=role, PolicyName=name)[
                    "PolicyDocument"]))
        for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=role):
            for attached in page.get("AttachedPolicies", []):
                docs.append(self._managed(iam, attached["PolicyArn"]))
        arn = (iam.get_role(RoleName=role)["Role"].get("PermissionsBoundary") or {}).get(
            "PermissionsBoundaryArn")
        return docs, (self._managed(iam, arn) if arn else None)

    @staticmethod
    def _managed(iam: Any, arn: str) -> dict:
        version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
        return _document(iam.get_policy_version(PolicyArn=arn, VersionId=version)[
            "PolicyVersion"]["Document"])
