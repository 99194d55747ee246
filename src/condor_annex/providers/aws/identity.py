"""Who the caller is: the user's identity, the value of tag ``htcondor:AnnexOwner``.

The identity is the ``Arn`` of STS GetCallerIdentity, which names an IAM user or role and is the
same on every machine the user runs from; an assumed-role *session* ARN
(``arn:aws:sts::A:assumed-role/R/session``) changes with each session, so it is reduced to its
role's ARN (``arn:aws:iam::A:role/R``).  ``check-setup --preflight`` simulates the same
principal's permissions.
"""

from __future__ import annotations

from condor_annex.config import AwsSettings
from condor_annex.providers.aws.errors import aws_errors
from condor_annex.providers.aws.session import make_client


def caller_principal(arn: str) -> str:
    """The IAM principal of a caller ARN (STS GetCallerIdentity ``Arn``): a user's or role's
    ARN as is; an assumed-role session ``arn:P:sts::A:assumed-role/R/S`` as its role
    ``arn:P:iam::A:role/R`` (a role with a path needs GetRole; not done: roles of users of this
    tool seldom have one)."""
    parts = arn.split(":", 5)
    if len(parts) == 6 and parts[2] == "sts" and parts[5].startswith("assumed-role/"):
        role = parts[5].split("/")[1]
        return f"arn:{parts[1]}:iam::{parts[4]}:role/{role}"
    return arn


def caller_owner(settings: AwsSettings) -> str:
    """The caller's identity (:func:`caller_principal` of STS GetCallerIdentity's ``Arn``), e.g.
    ``"arn:aws:iam::111122223333:user/alice"``.  One call; callers cache it for a command.

    Raises:
        ProviderError: the call failed (AuthError: the credentials are not valid).
    """
    with aws_errors("sts.GetCallerIdentity"):
        arn = make_client(settings, "sts").get_caller_identity()["Arn"]
    return caller_principal(arn)
