"""Values that cross layer boundaries: frozen dataclasses and the annex-name rules.

Names follow the field's terms: an *annex* is a named, leased group of instances; its *lease* is
the hard end time enforced on the cloud side; the *client token* ``<annex>_<uuid>`` makes the
launch request idempotent (EC2 RunInstances ``ClientToken``).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from condor_annex.errors import BadInputError

#: EC2 tag that marks an instance as a member of an annex; the cloud-side truth of membership.
TAG_ANNEX_NAME = "htcondor:AnnexName"
#: Tag on the instance role that names the private config bucket (read by the agent).
TAG_CONFIG_BUCKET = "htcondor:ConfigBucket"
#: HTCondor's classic limit (AnnexID); also keeps rule and schedule names within AWS limits.
ANNEX_NAME_MAX = 27
_ANNEX_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")

#: Defaults of the original tool (seconds): ANNEX_DEFAULT_LEASE_DURATION, ..._UNCLAIMED_TIMEOUT.
DEFAULT_LEASE_SECONDS = 3000
DEFAULT_IDLE_SECONDS = 900
DEFAULT_INSTANCE_TYPE = "m4.large"
MAX_COUNT = 10000


def validate_annex_name(name: str, flag: str = "--annex-name") -> str:
    """Return ``name`` if it is a valid annex name, else raise.

    Valid: 1-27 characters of ``[A-Za-z0-9-]``, starting with a letter or digit. ``_`` is refused
    because the client token ``<annex>_<uuid>`` is split at the last ``_``; the original split at
    the first one (reference §10).

    Raises:
        BadInputError: naming ``flag`` and the rule.
    """
    if not name:
        raise BadInputError(f"{flag}: an annex name is required, e.g. {flag} my-annex")
    if len(name) > ANNEX_NAME_MAX:
        raise BadInputError(
            f"{flag}: '{name}' has {len(name)} characters; use at most {ANNEX_NAME_MAX}")
    if not _ANNEX_NAME_RE.match(name):
        raise BadInputError(
            f"{flag}: '{name}' may use only letters, digits and '-' (no '_'), starting with a "
            "letter or digit")
    return name


def new_client_token(annex_name: str) -> str:
    """Return a fresh idempotency token ``<annex>_<uuid4 hex>`` (at most 64 characters, per EC2)."""
    return f"{annex_name}_{uuid.uuid4().hex}"


def annex_name_from_client_token(token: str) -> str:
    """Return the annex name of a client token: everything left of the **last** ``_``."""
    return token.rpartition("_")[0]


def bundle_key(annex_name: str) -> str:
    """S3 key of an annex's config bundle in the private bucket (``config-<annex>.tar.gz``)."""
    return f"config-{annex_name}.tar.gz"


def lease_schedule_name(annex_name: str) -> str:
    """Name of the EventBridge Scheduler schedule that is the annex's lease."""
    return f"annex-lease-{annex_name}"


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class SetupOutputs:
    """What ``setup`` made, as recorded in the user's config (CloudFormation stack outputs).

    Attributes:
        region: AWS region, e.g. ``"us-east-1"``.
        stack_name: the CloudFormation stack.
        bucket: private config-bundle bucket.
        lease_function_arn: the lease enforcer (Lambda) ARN.
        scheduler_role_arn: role EventBridge Scheduler assumes to invoke the lease function.
        instance_profile_arn: instance profile the annex instances run with.
        security_group_id: security group for annex instances.
        key_name: EC2 key pair name.
    """

    region: str
    stack_name: str
    bucket: str
    lease_function_arn: str
    scheduler_role_arn: str
    instance_profile_arn: str
    security_group_id: str
    key_name: str


@dataclass(frozen=True)
class LaunchRequest:
    """One bulk launch (EC2 RunInstances) for an annex.

    Attributes:
        annex_name: the annex; becomes tag ``htcondor:AnnexName``.
        client_token: ``<annex>_<uuid>``; the request is idempotent per token.
        count: instances to launch (MinCount = MaxCount = count).
        instance_type: e.g. ``"m4.large"``.
        image_id: AMI id.
        instance_profile_arn: IAM instance profile ARN.
        security_group_ids: security groups.
        key_name: key pair, or ``None``.
        tags: extra (key, value) tags from ``-tag``.
        user_data: raw user data (boto3 base64-encodes it), or ``None``.
    """

    annex_name: str
    client_token: str
    count: int
    instance_type: str
    image_id: str
    instance_profile_arn: str
    security_group_ids: tuple[str, ...] = ()
    key_name: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    user_data: bytes | None = None


@dataclass(frozen=True)
class LaunchResult:
    """Answer to a launch: the token and the ids of the instances it created (or found)."""

    client_token: str
    instance_ids: tuple[str, ...]


@dataclass(frozen=True)
class CloudInstance:
    """One instance as the cloud reports it (EC2 DescribeInstances).

    Attributes:
        instance_id: e.g. ``"i-0abc..."``.
        annex_name: value of tag ``htcondor:AnnexName``.
        state: EC2 state name: pending, running, shutting-down, terminated, stopping, stopped.
        instance_type: e.g. ``"m4.large"``.
        launch_time: aware UTC datetime.
        client_token: the launch's client token ("" for fleet members).
        private_ip: private IPv4 address or "".
        public_ip: public IPv4 address or "".
    """

    instance_id: str
    annex_name: str
    state: str
    instance_type: str = ""
    launch_time: datetime | None = None
    client_token: str = ""
    private_ip: str = ""
    public_ip: str = ""

    @property
    def alive(self) -> bool:
        """True while the instance may cost money or run work (pending or running or stopping)."""
        return self.state in ("pending", "running", "stopping", "stopped")


@dataclass(frozen=True)
class LeaseRef:
    """An annex's lease: a one-time schedule that runs the lease enforcer at ``expires_at``."""

    annex_name: str
    schedule_name: str
    expires_at: datetime


@dataclass(frozen=True)
class BundleRef:
    """Where an annex's config bundle is stored."""

    bucket: str
    key: str


@dataclass(frozen=True)
class AnnexSpec:
    """What the user asked for.

    Attributes:
        name: validated annex name.
        count: instances (on-demand).
        lease_seconds: lease length from now, seconds (default 3000).
        idle_seconds: unclaimed time after which a node shuts down, seconds (default 900).
        instance_type: EC2 instance type.
        image_id: AMI id, or "" for the configured default.
        owners: users whose jobs may start on the annex (START policy).
        tags: extra instance tags.
        user_data: user data for the instances, or None.
    """

    name: str
    count: int
    lease_seconds: int = DEFAULT_LEASE_SECONDS
    idle_seconds: int = DEFAULT_IDLE_SECONDS
    instance_type: str = DEFAULT_INSTANCE_TYPE
    image_id: str = ""
    owners: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = field(default=())
    user_data: bytes | None = None
