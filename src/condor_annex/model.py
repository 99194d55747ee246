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
#: EC2 tag ``off`` sets on an annex's instances: the agent then shuts HTCondor down gracefully
#: (as ``condor_off -annex`` would) and powers the instance off.
TAG_ANNEX_OFF = "htcondor:AnnexOff"
#: EC2 tag on every instance and fleet of one launch request: its client token.  A rollback
#: ends only what carries its own request's token, never the rest of the annex.
TAG_LAUNCH_TOKEN = "htcondor:LaunchToken"
#: Tags of ours: users may not set any tag with this prefix (``-tag``/``--tag``).
RESERVED_TAG_PREFIX = "htcondor:"
#: HTCondor's classic limit (AnnexID); also keeps rule and schedule names within AWS limits.
ANNEX_NAME_MAX = 27
_ANNEX_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")

#: Defaults of the original tool (seconds): ANNEX_DEFAULT_LEASE_DURATION, ..._UNCLAIMED_TIMEOUT.
DEFAULT_LEASE_SECONDS = 3000
DEFAULT_IDLE_SECONDS = 900
DEFAULT_INSTANCE_TYPE = "m4.large"
MAX_COUNT = 10000
#: Seconds ``off`` gives nodes in the pool to leave it gracefully before terminating them.
DEFAULT_OFF_GRACE_SECONDS = 30


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
        config_bucket: the private bucket, tagged on each instance (``htcondor:ConfigBucket``)
            so the agent needs no IAM call to find it; "" for none.
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
    config_bucket: str = ""


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
        lease_explicit: True when the user gave the lease length (``--duration`` /
            ``-duration``); adding to an existing annex then moves its lease, but only later.
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
    lease_explicit: bool = False


# --- Spot annexes ----------------------------------------------------------------------------

#: The two Spot APIs: the classic Spot Fleet (``-slots``, RequestSpotFleet) and EC2 Fleet
#: (``create --spot``, CreateFleet with a launch template).
SPOT_API_SPOT_FLEET = "spot-fleet"
SPOT_API_EC2_FLEET = "ec2-fleet"
#: Fleet types each API accepts (RequestSpotFleet ``Type``; CreateFleet ``Type``).
SPOT_FLEET_TYPES = ("request", "maintain")
EC2_FLEET_TYPES = ("instant", "request", "maintain")
#: Default allocation strategies (RequestSpotFleet and CreateFleet spell them differently).
DEFAULT_SPOT_FLEET_ALLOCATION = "capacityOptimized"
DEFAULT_EC2_FLEET_ALLOCATION = "capacity-optimized"
#: Largest weighted capacity accepted for one annex (as MAX_COUNT for instances).
MAX_CAPACITY = MAX_COUNT

#: Top-level keys of a RequestSpotFleet ``SpotFleetRequestConfig`` (EC2 API 2016-11-15).
SPOT_FLEET_CONFIG_KEYS = frozenset({
    "AllocationStrategy", "ClientToken", "Context", "ExcessCapacityTerminationPolicy",
    "FulfilledCapacity", "IamFleetRole", "InstanceInterruptionBehavior",
    "InstancePoolsToUseCount", "LaunchSpecifications", "LaunchTemplateConfigs",
    "LoadBalancersConfig", "OnDemandAllocationStrategy", "OnDemandFulfilledCapacity",
    "OnDemandMaxTotalPrice", "OnDemandTargetCapacity", "ReplaceUnhealthyInstances",
    "SpotMaintenanceStrategies", "SpotMaxTotalPrice", "SpotPrice", "TagSpecifications",
    "TargetCapacity", "TargetCapacityUnitType", "TerminateInstancesWithExpiration", "Type",
    "ValidFrom", "ValidUntil",
})
#: Keys of one ``SpotFleetLaunchSpecification``.
SPOT_FLEET_LAUNCH_SPEC_KEYS = frozenset({
    "AddressingType", "BlockDeviceMappings", "EbsOptimized", "IamInstanceProfile", "ImageId",
    "InstanceRequirements", "InstanceType", "KernelId", "KeyName", "Monitoring",
    "NetworkInterfaces", "Placement", "RamdiskId", "SecurityGroups", "SpotPrice", "SubnetId",
    "TagSpecifications", "UserData", "WeightedCapacity",
})
_ALLOCATIONS = ("lowestPrice", "diversified", "capacityOptimized",
                "capacityOptimizedPrioritized", "priceCapacityOptimized")
_INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")


def parse_spot_fleet_config(text: str, flag: str = "-aws-spot-fleet-config-file") -> str:
    """Validate a Spot Fleet request config (the JSON the classic tool read) and return it
    re-serialised (compact, sorted keys), so it can travel in a frozen dataclass.

    Accepts the bare ``SpotFleetRequestConfig`` object or the AWS CLI's wrapper
    ``{"SpotFleetRequestConfig": {...}}``.  Every check runs before any cloud call; what the
    command line and setup provide (capacity, token, ValidUntil, profile, tags) need not be in
    the file and is replaced if it is (see :mod:`condor_annex.providers.aws.fleet`).

    Raises:
        BadInputError: naming ``flag``: not JSON, not an object, an unknown key, no
            ``LaunchSpecifications``, a launch specification without ``InstanceType``, a bad
            ``WeightedCapacity``, ``Type`` or ``AllocationStrategy``, or ``LaunchTemplateConfigs``
            (not supported: the annex's launch settings go into launch specifications).
    """
    import json

    try:
        data = json.loads(text)
    except ValueError as e:
        raise BadInputError(f"{flag}: not valid JSON ({e}); give a Spot Fleet request config, "
                            'e.g. {"LaunchSpecifications": [{"InstanceType": "m5.large"}]}') \
            from None
    if isinstance(data, dict) and set(data) == {"SpotFleetRequestConfig"}:
        data = data["SpotFleetRequestConfig"]
    if not isinstance(data, dict):
        raise BadInputError(f"{flag}: the JSON must be an object (a SpotFleetRequestConfig)")
    unknown = sorted(set(data) - SPOT_FLEET_CONFIG_KEYS)
    if unknown:
        raise BadInputError(f"{flag}: unknown key(s) {', '.join(unknown)}; use the keys of "
                            "RequestSpotFleet's SpotFleetRequestConfig")
    if "LaunchTemplateConfigs" in data:
        raise BadInputError(f"{flag}: LaunchTemplateConfigs is not supported; describe the "
                            "instances in LaunchSpecifications (or use 'create --spot')")
    specs = data.get("LaunchSpecifications")
    if not isinstance(specs, list) or not specs:
        raise BadInputError(f"{flag}: LaunchSpecifications must be a non-empty list")
    for n, spec in enumerate(specs):
        where = f"{flag}: LaunchSpecifications[{n}]"
        if not isinstance(spec, dict):
            raise BadInputError(f"{where} must be an object")
        unknown = sorted(set(spec) - SPOT_FLEET_LAUNCH_SPEC_KEYS)
        if unknown:
            raise BadInputError(f"{where}: unknown key(s) {', '.join(unknown)}")
        itype = spec.get("InstanceType")
        if not isinstance(itype, str) or not _INSTANCE_TYPE_RE.match(itype):
            raise BadInputError(f"{where}: InstanceType must be an instance type, e.g. "
                                '"InstanceType": "m5.large"')
        weight = spec.get("WeightedCapacity", 1)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
            raise BadInputError(f"{where}: WeightedCapacity must be a number above 0")
    if data.get("Type", "request") not in SPOT_FLEET_TYPES:
        raise BadInputError(f"{flag}: Type must be one of {', '.join(SPOT_FLEET_TYPES)} "
                            f"(got {data.get('Type')!r})")
    if data.get("AllocationStrategy", _ALLOCATIONS[0]) not in _ALLOCATIONS:
        raise BadInputError(f"{flag}: AllocationStrategy must be one of "
                            f"{', '.join(_ALLOCATIONS)}")
    for key in ("IamFleetRole", "SpotPrice"):
        if key in data and not isinstance(data[key], str):
            raise BadInputError(f"{flag}: {key} must be a string")
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def parse_instance_types(text: str, flag: str = "--instance-types") -> tuple[tuple[str, float],
                                                                             ...]:
    """Parse ``"m5.large,c5.large:2"`` into ((type, weight), ...); the weight defaults to 1.

    Raises:
        BadInputError: empty, a malformed type, a weight that is not a number above 0, or a
            type given twice.
    """
    out: list[tuple[str, float]] = []
    for item in (p.strip() for p in (text or "").split(",")):
        if not item:
            continue
        name, _, weight_text = item.partition(":")
        if not _INSTANCE_TYPE_RE.match(name):
            raise BadInputError(f"{flag}: '{name}' is not an instance type; use e.g. "
                                f"{flag} m5.large,c5.large:2")
        try:
            weight = float(weight_text) if weight_text else 1.0
        except ValueError:
            weight = 0.0
        if not 0 < weight <= MAX_CAPACITY:
            raise BadInputError(f"{flag}: weight '{weight_text}' of {name} must be a number "
                                "above 0, e.g. m5.xlarge:2")
        if name in (n for n, _ in out):
            raise BadInputError(f"{flag}: {name} is given twice")
        out.append((name, weight))
    if not out:
        raise BadInputError(f"{flag}: give at least one instance type, e.g. {flag} m5.large")
    return tuple(out)


@dataclass(frozen=True)
class SpotSpec:
    """How an annex gets Spot capacity.  With a SpotSpec, ``AnnexSpec.count`` is the fleet's
    **target capacity** in weighted units (``-slots W``, ``--capacity W``), not instances.

    Attributes:
        api: :data:`SPOT_API_EC2_FLEET` (CreateFleet with a launch template; modern
            ``--spot``) or :data:`SPOT_API_SPOT_FLEET` (RequestSpotFleet; classic ``-slots``).
        fleet_type: ``instant`` (EC2 Fleet only), ``request`` or ``maintain``.
        instance_types: (type, weight) overrides of an EC2 Fleet; for a Spot Fleet, the file's
            launch specifications decide.
        allocation_strategy: the API's own spelling; "" for the default.
        spot_fleet_config: a Spot Fleet's request config as validated JSON text
            (:func:`parse_spot_fleet_config`).
        iam_fleet_role: Spot Fleet role ARN used when the file has no ``IamFleetRole``
            (knob ``ANNEX_DEFAULT_SFR_IAM_FLEET_ROLE``).
        default_user_data: user data only for Spot Fleet launch specifications that have none
            (``-aws-default-user-data``); ``FleetRequest.user_data`` replaces every one's.
    """

    api: str = SPOT_API_EC2_FLEET
    fleet_type: str = "instant"
    instance_types: tuple[tuple[str, float], ...] = ()
    allocation_strategy: str = ""
    spot_fleet_config: str = ""
    iam_fleet_role: str = ""
    default_user_data: bytes | None = None

    def fleet_role_arn(self) -> str:
        """The Spot Fleet role: the config's ``IamFleetRole``, else :attr:`iam_fleet_role`."""
        import json

        config = json.loads(self.spot_fleet_config) if self.spot_fleet_config else {}
        return config.get("IamFleetRole") or self.iam_fleet_role


@dataclass(frozen=True)
class FleetRequest:
    """One Spot launch for an annex (RequestSpotFleet or CreateFleet).

    Attributes:
        annex_name: the annex; becomes tag ``htcondor:AnnexName`` on the fleet and instances.
        client_token: ``<annex>_<uuid>``; the request is idempotent per token (on AWS).
        target_capacity: weighted capacity to launch.
        valid_until: the lease end (aware UTC): the fleet expires with its instances then.
        image_id: AMI used where the spot spec names none.
        instance_profile_arn: IAM instance profile ARN (always ours: the agent needs it).
        security_group_ids: security groups (default for launch specs naming none).
        key_name: key pair, or ``None``.
        tags: extra (key, value) instance tags.
        user_data: raw user data for every instance, or ``None``.
        spot: the API and its settings.
        config_bucket: as :class:`LaunchRequest`.
    """

    annex_name: str
    client_token: str
    target_capacity: int
    valid_until: datetime
    image_id: str
    instance_profile_arn: str
    spot: SpotSpec
    security_group_ids: tuple[str, ...] = ()
    key_name: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    user_data: bytes | None = None
    config_bucket: str = ""


@dataclass(frozen=True)
class FleetResult:
    """Answer to a Spot launch.

    Attributes:
        client_token: the request's token.
        fleet_id: ``sfr-...`` (Spot Fleet) or ``fleet-...`` (EC2 Fleet).
        instance_ids: instances known at once (an instant fleet's); others come later.
        launch_template_id: the annex's launch template (EC2 Fleet), else "".
    """

    client_token: str
    fleet_id: str
    instance_ids: tuple[str, ...] = ()
    launch_template_id: str = ""


@dataclass(frozen=True)
class FleetsEnded:
    """What ending an annex's fleets did (``off``).

    Attributes:
        spot_fleet_requests: Spot Fleet requests cancelled (their instances terminated).
        fleets: EC2 Fleets deleted (their instances terminated).
        launch_templates: launch templates deleted.
    """

    spot_fleet_requests: tuple[str, ...] = ()
    fleets: tuple[str, ...] = ()
    launch_templates: tuple[str, ...] = ()
