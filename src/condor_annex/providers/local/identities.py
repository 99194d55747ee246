"""What IMDS tells each local instance about itself: its identity, tags and role credentials.

EC2 gives an instance its launch's instance profile at launch, and IMDS serves that role's
credentials (``iam/security-credentials/<role>``) and the instance's tags (instance metadata
tags) as they change.  :class:`InstanceIdentities` builds each new instance's
:class:`~condor_annex.providers.local.imds.InstanceMetadata` from DescribeInstances and keeps it
in step, with credentials of the instance's role alone (:func:`role_access_key`), so the
gateway's strict IAM rule evaluates what that role may do, as AWS does for the role's session.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from condor_annex.providers.local.imds import InstanceMetadata
from condor_annex.providers.local.layout import FAKE_KEY

if TYPE_CHECKING:
    from condor_annex.providers.local.gateway import Gateway

log = logging.getLogger("condor_annex.local")


def role_access_key(role_name: str) -> str:
    """The access key id of role ``role_name``'s instance credentials on the local cloud:
    ``ASIA`` + 16 characters derived from the name (distinct per role, stable across restarts;
    moto checks no signature, the gateway knows which role a key is)."""
    return "ASIA" + hashlib.sha256(role_name.encode()).hexdigest()[:16].upper()


class InstanceIdentities:
    """Metadata of the local instances, from EC2's view of them.

    Args:
        client: ``client(service)`` -> a boto3 client of the local cloud's endpoint (IAM
            GetInstanceProfile resolves a profile's role).
        gateway: the AWS gateway, told which role each instance access key is (None: not
            told, e.g. in tests without one).
        region: the instances' region (identity document).
    """

    def __init__(self, client: Callable[[str], Any], gateway: Gateway | None,
                 region: str) -> None:
        self._client = client
        self._gateway = gateway
        self._region = region
        self._profiles: dict[str, str] = {}

    def metadata(self, inst: dict, address: str, user_data: bytes | None) -> InstanceMetadata:
        """The metadata of a new instance (``inst``: one DescribeInstances instance) booting at
        ``address`` with the launch's ``user_data``."""
        profile_arn = (inst.get("IamInstanceProfile") or {}).get("Arn", "")
        role = self.role_of(profile_arn)
        return InstanceMetadata(
            instance_id=inst["InstanceId"], region=self._region,
            availability_zone=inst.get("Placement", {}).get("AvailabilityZone", "us-east-1a"),
            private_ip=address, public_ip=address,
            tags={t["Key"]: t["Value"] for t in inst.get("Tags", [])},
            instance_profile_arn=profile_arn, role_name=role,
            credentials=self.credentials_of(role), user_data=user_data,
            image_id=inst.get("ImageId", ""), instance_type=inst.get("InstanceType", "m4.large"))

    def refreshed(self, md: InstanceMetadata, inst: dict) -> InstanceMetadata:
        """``md`` kept in step with EC2, as IMDS does: instance tags follow
        CreateTags/DeleteTags (``off`` tags instances), and ``iam/`` follows the instance
        profile.  The profile matters at boot: a DescribeInstances that overlaps moto's
        RunInstances can list instances before moto attached the profile (a bulk boot then
        left some nodes without role credentials until their agent gave up).

        Returns:
            ``md`` itself when nothing changed, else a new metadata.
        """
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        # Never back to none: moto lists fleet members without the profile their fleet gave
        # them (filled in only when they boot), and condor_annex never disassociates one.
        profile_arn = (inst.get("IamInstanceProfile") or {}).get("Arn", "") \
            or md.instance_profile_arn
        if tags == md.tags and profile_arn == md.instance_profile_arn \
                and (not profile_arn or md.role_name):
            return md
        if profile_arn != md.instance_profile_arn:
            log.info("%s: instance profile now %r", md.instance_id, profile_arn)
        role = self.role_of(profile_arn)
        return dataclasses.replace(md, tags=tags, instance_profile_arn=profile_arn,
                                   role_name=role, credentials=self.credentials_of(role))

    def credentials_of(self, role_name: str) -> tuple[str, str, str]:
        """The credentials IMDS hands an instance of role ``role_name``: an access key of that
        role alone (:func:`role_access_key`), registered with the gateway so that its strict
        IAM rule (:mod:`~condor_annex.providers.local.strict_iam`) evaluates what the role may
        read, as AWS does for the role's session.  No role: the old shared fake key."""
        if not role_name:
            return (FAKE_KEY, FAKE_KEY, "local-session-token")
        key = role_access_key(role_name)
        if self._gateway is not None:
            self._gateway.register_role_key(key, role_name)
        return (key, FAKE_KEY, "local-session-token-" + role_name)

    def role_of(self, profile_arn: str) -> str:
        """The role of instance profile ``profile_arn`` (IAM GetInstanceProfile, cached); ""
        for none, or while IAM does not know the profile yet (not cached: asked again on the
        next pass)."""
        if not profile_arn:
            return ""
        if profile_arn not in self._profiles:
            try:
                prof = self._client("iam").get_instance_profile(
                    InstanceProfileName=profile_arn.rsplit("/", 1)[-1])["InstanceProfile"]
                self._profiles[profile_arn] = (prof.get("Roles") or [{}])[0].get("RoleName", "")
            except Exception:  # noqa: BLE001 - an instance without a usable role still boots
                log.warning("instance profile %s: no role yet", profile_arn, exc_info=True)
                return ""   # not cached: the next reconcile pass asks again
        return self._profiles[profile_arn]
