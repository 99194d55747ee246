"""STS GetCallerIdentity of an instance role's session (a gateway strict rule).

On AWS, a request signed with an instance profile's credentials comes from a session of the
profile's role: GetCallerIdentity answers ``Arn``
``arn:aws:sts::<account>:assumed-role/<role name>/<session name>`` (the role's name without its
path), ``UserId`` ``<role id>:<session name>`` and ``Account``; for the credentials EC2 hands an
instance, the session name is the instance id
(docs.aws.amazon.com/STS/latest/APIReference/API_GetCallerIdentity.html,
docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use_switch-role-ec2.html,
docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_variables.html "aws:userid").
The seed node relies on it: it tags the annexes it makes with the role it runs as.

moto does not know the local cloud's instance keys (:func:`.identities.role_access_key`, made
by the local IMDS, never by moto's STS) and answers ``arn:aws:sts::123456789012:user/moto`` for
them.  This rule answers GetCallerIdentity signed with a key the local cloud registered as a
role's (:meth:`Gateway.register_role_key`) from the role in moto's IAM (GetRole: its id and
account).  **Session name**: the local cloud gives every instance of a role the same key, so
the instance is not known from the key; the session name is the role's name (on AWS it is the
instance id: code that reduces the ARN to the role must not read anything into it).  A role IAM
no longer knows: its credentials no longer work, as in :mod:`.strict_iam`
(``InvalidClientTokenId``, 403).  Every other key (the CLI user's) goes to moto unchanged.
"""

from __future__ import annotations

import logging
import uuid
from xml.sax.saxutils import escape

from condor_annex.providers.local.gateway_call import Call
from condor_annex.providers.local.gateway_replies import Reply, error_reply
from condor_annex.providers.local.gateway_strict import StrictRule

log = logging.getLogger(__name__)
_NS = "https://sts.amazonaws.com/doc/2011-06-15/"

__all__ = ["RoleSessionIdentity", "caller_identity"]


def caller_identity(role: dict, session: str) -> dict[str, str]:
    """GetCallerIdentity's answer for a session ``session`` of IAM role ``role``.

    Args:
        role: one IAM GetRole ``Role`` (``RoleName``, ``RoleId``, ``Arn``).
        session: the role session name.

    Returns:
        ``{"Arn": "arn:aws:sts::<account>:assumed-role/<name>/<session>", "UserId":
        "<role id>:<session>", "Account": "<account>"}``.
    """
    account = role["Arn"].split(":")[4]
    return {"Arn": f"arn:aws:sts::{account}:assumed-role/{role['RoleName']}/{session}",
            "UserId": f"{role['RoleId']}:{session}", "Account": account}


class RoleSessionIdentity(StrictRule):
    """The rule of the module docstring."""

    def answer(self, call: Call, body: bytes) -> Reply | None:
        """Answer GetCallerIdentity signed with a registered role key; None (forward) for
        every other request."""
        if call.service != "sts" or call.operation != "GetCallerIdentity":
            return None
        role_name = self.gateway.role_of_key(call.access_key)
        if role_name is None:
            return None
        iam = self.gateway.upstream_client("iam", call.region or "us-east-1")
        try:
            role = iam.get_role(RoleName=role_name)["Role"]
        except iam.exceptions.NoSuchEntityException:
            log.info("GetCallerIdentity: role %s of key %s is gone", role_name, call.access_key)
            return error_reply(call, "InvalidClientTokenId",
                               "The security token included in the request is invalid.", 403)
        who = caller_identity(role, session=role_name)
        body_out = (f'<GetCallerIdentityResponse xmlns="{_NS}"><GetCallerIdentityResult>'
                    f"<Arn>{escape(who['Arn'])}</Arn><UserId>{escape(who['UserId'])}</UserId>"
                    f"<Account>{who['Account']}</Account></GetCallerIdentityResult>"
                    f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId>"
                    "</ResponseMetadata></GetCallerIdentityResponse>")
        return 200, [("Content-Type", "text/xml")], body_out.encode()
