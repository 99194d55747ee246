"""Values that cross layer boundaries: frozen dataclasses, and the parsing of structured
inputs (Spot Fleet config, instance types); the per-value rules are :mod:`condor_annex.validate`.

Names follow the field's terms: an *annex* is a named, leased group of instances; its *lease* is
the hard end time enforced on the cloud side; the *client token* ``<annex>_<uuid>`` makes the
launch request idempotent (EC2 RunInstances ``ClientToken``).
"""

from __future__ import annotations

import functools
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from condor_annex import validate
from condor_annex.errors import BadInputError
# Limits that are validation rules, re-exported for the layers above.
from condor_annex.validate import ANNEX_NAME_MAX, MAX_COUNT  # noqa: F401
from condor_annex.validate import RESERVED_TAG_PREFIX as _RESERVED_TAG_PREFIX

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
#: EC2 tag on an annex's instances, fleets and launch template: its lease end, epoch seconds
#: (decimal).  The lease sweep ends annexes whose tag has passed; the agent reads it from
#: instance metadata as its instance-side backstop.  ``extend`` rewrites it.
TAG_LEASE_END = "htcondor:LeaseEnd"
#: EC2 ``StateReason.Code`` of an instance ended by a spot interruption
#: (docs.aws.amazon.com/AWSEC2/latest/APIReference/API_StateReason.html).
SPOT_INTERRUPTION_REASON = "Server.SpotInstanceTermination"
#: EC2 tag on a budgeted annex's instances: ``"<budget USD> <type>=<USD per hour> ..."``, the
#: budget and the prices looked up at create.  The lease sweep ends the annex from it, its
#: instances' types and launch times alone (:func:`condor_annex.lease.handler.over_budget`).
TAG_BUDGET = "htcondor:Budget"
#: Tag on everything ``create`` makes (instances, volumes, fleets, Spot Fleet requests, launch
#: templates, the annex's role and instance profile, the bundle object; a lease schedule, which
#: takes no tags, carries it in its event as ``AnnexOwner``): the user's identity, the caller
#: ARN of STS GetCallerIdentity with an assumed-role session reduced to its role
#: (:func:`condor_annex.providers.aws.identity.caller_principal`).  ``sweep`` ends only what
#: carries its own user's value, so colleagues sharing an account never touch each other's.
TAG_ANNEX_OWNER = "htcondor:AnnexOwner"
#: Tag of a **prepared image** (``condor_annex image build``): the package version whose
#: bootstrap it baked in; its bootstrap skips the install and agent-fetch steps.
TAG_ANNEX_IMAGE = "htcondor:AnnexImage"
#: Instance tag ``off`` on a node that must not shut down when idle (an autoscaled annex's
#: ``--min`` nodes, issue 13); the agent then overrides the bundle's STARTD_NOCLAIM_SHUTDOWN.
TAG_IDLE_SHUTDOWN = "htcondor:IdleShutdown"
#: Tags of ours: users may not set any tag with this prefix (``-tag``/``--tag``); the rule is
#: :func:`condor_annex.validate.tag`, which owns the constant.
RESERVED_TAG_PREFIX = _RESERVED_TAG_PREFIX
#: Defaults of the original tool (seconds): ANNEX_DEFAULT_LEASE_DURATION, ..._UNCLAIMED_TIMEOUT.
DEFAULT_LEASE_SECONDS = 3000
DEFAULT_IDLE_SECONDS = 900
DEFAULT_INSTANCE_TYPE = "m4.large"
#: Seconds ``off`` gives nodes in the pool to leave it gracefully before terminating them.
DEFAULT_OFF_GRACE_SECONDS = 30


def validate_annex_name(name: str, flag: str = "--annex-name") -> str:
    """Return ``name`` if it is a valid annex name, else raise (see
    :func:`condor_annex.validate.annex_name`: 1-27 of ``[A-Za-z0-9-]``, no ``_``).

    Raises:
        BadInputError: naming ``flag`` and the rule.
    """
    return validate.annex_name(name, flag)


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


def lease_end_value(lease_end: datetime) -> str:
    """The value of tag ``htcondor:LeaseEnd`` for a lease ending at ``lease_end`` (aware): whole
    epoch seconds, rounded up, as a decimal string (e.g. ``"1893553445"``)."""
    return str(math.ceil(lease_end.timestamp()))


#: ``--subnet-id`` / ``ANNEX_DEFAULT_SUBNET_IDS``: an EC2 subnet id (8 hex digits in old
#: accounts, 17 since 2018).
_SUBNET_RE = re.compile(r"subnet-[0-9a-f]{8,17}", re.ASCII)
#: Most subnets one annex spreads over (EC2 Fleet overrides are one per type and subnet).
MAX_SUBNETS = 16


def parse_subnet_ids(text: str, flag: str = "--subnet-id") -> tuple[str, ...]:
    """Parse ``"subnet-0abc...,subnet-0def..."`` (comma-separated, spaces ignored) into a tuple
    of subnet ids, in order.  The first is the one RunInstances uses; fleets spread over all.

    Raises:
        BadInputError: one line naming ``flag``: empty, a value that is not a subnet id
            (``subnet-`` and 8 to 17 hexadecimal digits), one given twice, or more than
            :data:`MAX_SUBNETS`.
    """
    ids = [p.strip(" ") for p in (text or "").split(",") if p.strip(" ")]
    if not ids:
        raise BadInputError(f"{flag}: give a subnet id, e.g. {flag} subnet-0123456789abcdef0")
    for sid in ids:
        if not _SUBNET_RE.fullmatch(sid):
            raise BadInputError(f"{flag}: {validate.shown(sid, 40)} is not a subnet id; give "
                                "e.g. subnet-0123456789abcdef0")
    if len(set(ids)) != len(ids):
        raise BadInputError(f"{flag}: a subnet is given twice; give each once")
    if len(ids) > MAX_SUBNETS:
        raise BadInputError(f"{flag}: {len(ids)} subnets; give at most {MAX_SUBNETS}")
    return tuple(ids)


#: Largest ``--budget`` / ``ANNEX_DEFAULT_BUDGET`` accepted, USD (a typo guard: a million).
MAX_BUDGET_USD = 1_000_000.0
_BUDGET_RE = re.compile(r"[0-9]{1,7}(\.[0-9]{1,6})?|\.[0-9]{1,6}")


def parse_budget(text: str, flag: str = "--budget") -> float:
    """A dollar budget (``--budget 2.50``, knob ``ANNEX_DEFAULT_BUDGET``): ASCII digits with at
    most one decimal point and no sign, exponent, ``$`` or spaces; more than 0 and at most
    :data:`MAX_BUDGET_USD`; USD.

    Raises:
        BadInputError: naming ``flag`` (negative, zero, NaN, inf, non-numeric, too large).
    """
    usd = float(validate.dollars(text, flag, _BUDGET_RE,
                                 negative=f"a budget is more than 0 USD, e.g. {flag} 2.50",
                                 not_amount=f"; give a positive number, e.g. {flag} 2.50"))
    if not math.isfinite(usd) or usd <= 0 or usd > MAX_BUDGET_USD:
        raise BadInputError(f"{flag}: {validate.shown(text, 40)} must be more than 0 and at "
                            f"most {MAX_BUDGET_USD:,.0f} USD, e.g. {flag} 2.50")
    return usd


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
        spot_fleet_role_arn: role Spot Fleet assumes (RequestSpotFleet ``IamFleetRole``).
        seed_instance_profile_arn: the seed node's instance profile (issue 13); "" for a stack
            made before setup made it (see :class:`SeedOutputs`).
        seed_role_arn: the seed node's role, in that profile; "" likewise.
        seed_security_group_id: the seed node's security group (HTCondor's port 9618 in from
            ``security_group_id`` only); "" likewise.
        changes: what this run of ``setup`` changed in an existing stack, one line per resource
            (e.g. ``"Modify LeaseFunction (AWS::Lambda::Function)"``); empty when it created
            the stack or found it current.  Not recorded, not compared.
    """

    region: str
    stack_name: str
    bucket: str
    lease_function_arn: str
    scheduler_role_arn: str
    instance_profile_arn: str
    security_group_id: str
    key_name: str
    spot_fleet_role_arn: str
    seed_instance_profile_arn: str = ""
    seed_role_arn: str = ""
    seed_security_group_id: str = ""
    changes: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class SeedOutputs:
    """What ``setup`` made for the seed node (issue 13), as recorded in the user's config.

    Attributes:
        region: AWS region, e.g. ``"us-east-1"``.
        instance_profile_arn: the seed instance's IAM instance profile (its role may create,
            extend and end annexes, nothing of setup's).
        role_arn: the role in that profile (annexes the seed makes carry it as
            ``htcondor:AnnexOwner``).
        security_group_ids: the seed's security groups (setup's lets HTCondor's port 9618,
            TCP and UDP, in from the annex instances' group only).
    """

    region: str
    instance_profile_arn: str
    role_arn: str
    security_group_ids: tuple[str, ...]


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
        lease_end: the annex's lease end (aware UTC): tag ``htcondor:LeaseEnd`` on the
            instances and their volumes (the lease sweep and the agent's backstop read it);
            None for no tag.
        subnet_ids: subnets (``--subnet-id`` / ``ANNEX_DEFAULT_SUBNET_IDS``); RunInstances
            uses the first; () for the default VPC.
        owner: tag ``htcondor:AnnexOwner`` on what the request makes; "" lets the provider
            fill in the caller's identity.
        budget: tag ``htcondor:Budget`` on the instances (:data:`TAG_BUDGET`), "" for none.
        idle_shutdown: False for instances with no idle shutdown (an autoscaled annex's
            ``--min`` nodes): tag :data:`TAG_IDLE_SHUTDOWN` ``off``.
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
    lease_end: datetime | None = None
    subnet_ids: tuple[str, ...] = ()
    owner: str = ""
    budget: str = ""
    idle_shutdown: bool = True


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
        launch_token: tag ``htcondor:LaunchToken``: the client token of the request that made
            it (also for fleet members); "" for instances older than that tag.
        private_ip: private IPv4 address or "".
        public_ip: public IPv4 address or "".
        lease_end: tag ``htcondor:LeaseEnd`` as an aware UTC datetime, or None when absent.
        lifecycle: EC2 ``InstanceLifecycle``: ``"spot"``, or ``"on-demand"`` when absent.
        state_reason: EC2 ``StateReason.Code`` (e.g. ``Server.SpotInstanceTermination`` for a
            spot interruption), or "".
        az: its Availability Zone (``Placement.AvailabilityZone``), or "" (a Spot price is
            per zone).
    """

    instance_id: str
    annex_name: str
    state: str
    instance_type: str = ""
    launch_time: datetime | None = None
    client_token: str = ""
    launch_token: str = ""
    private_ip: str = ""
    public_ip: str = ""
    lease_end: datetime | None = None
    lifecycle: str = "on-demand"
    state_reason: str = ""
    az: str = ""

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
        subnet_ids: ``--subnet-id`` subnets (validated), or () for the
            ``ANNEX_DEFAULT_SUBNET_IDS`` knob, else the default VPC.
        image_name: ``--image NAME`` (``debian-13``...), or "" (see
            :func:`condor_annex.providers.aws.images.resolve_image` for the precedence).
        image_id_flag: how the AMI id was typed (``--image-id`` / ``-aws-on-demand-ami-id``).
        user_data_flag: how the user data was typed (``--user-data``, ``-aws-user-data``...).
        join_deadline_s: seconds a node may run without a startd ad in the collector before
            the reconciler ends it as never joined (``--join-deadline``); 0 means the knob
            ``ANNEX_JOIN_DEADLINE``, else 10 min.
        job_deadline_s: seconds a node may stay in the pool without ever running a job before
            the reconciler ends it (``--job-deadline``); 0 (the default) never.
        budget_usd: the annex's dollar limit, USD (``--budget`` / ``ANNEX_DEFAULT_BUDGET``);
            0.0 (the default) for none.  condor_annexd stops growth when the projection to
            the lease end exceeds it and ends the annex when the spend plus one minute of
            the current rate reaches it; the lease sweep does the same from the cloud
            (:mod:`condor_annex.reconciler.budget`, :mod:`condor_annex.lease.handler`).
        budget_per_day_usd: the user's cap per UTC day over all of their annexes, USD (the knob
            ``ANNEX_BUDGET_PER_DAY`` at create), enforced by condor_annexd only; 0.0 for none.
        budget_prices: for a budgeted annex (or one under a cap per day), (instance type, USD per hour) of each type it may
            launch, looked up at create (On-Demand, or Spot for a Spot annex); () otherwise.
            Budgets are computed with these prices, never with zero for a type.
        config_files: (file name, content) of each ``--config-dir`` / ``-config-dir`` file,
            checked (:func:`condor_annex.service.config_dir.read_config_dir`); they go into
            the bundle after the annex's own configuration.  () for none.
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
    subnet_ids: tuple[str, ...] = ()
    image_name: str = ""
    join_deadline_s: int = 0
    job_deadline_s: int = 0
    budget_usd: float = 0.0
    budget_per_day_usd: float = 0.0
    budget_prices: tuple[tuple[str, float], ...] = ()
    image_id_flag: str = "--image-id"
    user_data_flag: str = "--user-data"
    config_files: tuple[tuple[str, bytes], ...] = ()


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
_INSTANCE_TYPE_RE = re.compile(r"[a-z][a-z0-9-]*\.[a-z0-9]+", re.ASCII)
_ALLOCATIONS = ("lowestPrice", "diversified", "capacityOptimized",
                "capacityOptimizedPrioritized", "priceCapacityOptimized")
#: Largest Spot Fleet config file read, bytes (its real size is a few KB).
MAX_SPOT_FLEET_CONFIG_BYTES = 256 * 1024
#: Stand-ins for required members the command line and setup fill in later (see
#: providers/aws/fleet.py), so the file alone can be checked against the API's shape.
_SPOT_FLEET_FILLED_LATER = {"IamFleetRole": "arn:aws:iam::000000000000:role/filled-later",
                            "TargetCapacity": 1}


def _json_constant(name: str):
    # json.loads accepts NaN, Infinity and -Infinity; the EC2 API does not.
    raise ValueError(f"{name} is not a JSON number")


def parse_spot_fleet_config(text: str, flag: str = "-aws-spot-fleet-config-file") -> str:
    """Validate a Spot Fleet request config (the JSON the classic tool read) and return it
    re-serialised (compact, sorted keys), so it can travel in a frozen dataclass.

    Accepts the bare ``SpotFleetRequestConfig`` object or the AWS CLI's wrapper
    ``{"SpotFleetRequestConfig": {...}}``.  Every check runs before any cloud call: our own
    rules first (with messages that say what to change), then botocore's parameter validator
    against the EC2 service model's ``RequestSpotFleet`` input shape (types, unknown and nested
    keys), loaded from botocore's own data files (no network, no credentials).  What the
    command line and setup provide (capacity, token, ValidUntil, profile, tags) need not be in
    the file and is replaced if it is (see :mod:`condor_annex.providers.aws.fleet`).

    Raises:
        BadInputError: one line naming ``flag`` and the first problem: too big, not JSON, not
            an object, an unknown key, no ``LaunchSpecifications``, a launch specification
            without ``InstanceType`` or with the deprecated ``AddressingType``, a bad
            ``WeightedCapacity``, ``Type``, ``AllocationStrategy``, ``ImageId``, ``UserData``
            or tag, ``LaunchTemplateConfigs``
            (not supported: the annex builds its own launch template from the launch
            specifications), or a value of the wrong shape for the API.
    """
    import json

    if len(text) > MAX_SPOT_FLEET_CONFIG_BYTES:
        raise BadInputError(f"{flag}: the config is {len(text)} characters; at most "
                            f"{MAX_SPOT_FLEET_CONFIG_BYTES} are accepted")
    try:
        data = json.loads(text, parse_constant=_json_constant)
    except (ValueError, RecursionError) as e:
        reason = validate.shown(e, 80) if isinstance(e, ValueError) else "nested too deeply"
        raise BadInputError(f"{flag}: not valid JSON ({reason}); give a Spot Fleet request "
                            'config, e.g. {"LaunchSpecifications": [{"InstanceType": '
                            '"m5.large"}]}') from None
    if isinstance(data, dict) and set(data) == {"SpotFleetRequestConfig"}:
        data = data["SpotFleetRequestConfig"]
    if not isinstance(data, dict):
        raise BadInputError(f"{flag}: the JSON must be an object (a SpotFleetRequestConfig)")
    unknown = sorted(set(data) - SPOT_FLEET_CONFIG_KEYS)
    if unknown:
        raise BadInputError(f"{flag}: unknown key(s) {_names(unknown)}; use the keys of "
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
            raise BadInputError(f"{where}: unknown key(s) {_names(unknown)}")
        itype = spec.get("InstanceType")
        if not isinstance(itype, str) or not _INSTANCE_TYPE_RE.fullmatch(itype):
            raise BadInputError(f"{where}: InstanceType must be an instance type, e.g. "
                                '"InstanceType": "m5.large"')
        weight = spec.get("WeightedCapacity", 1)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                or not 0 < weight <= MAX_CAPACITY:
            raise BadInputError(f"{where}: WeightedCapacity must be a number above 0 and at "
                                f"most {MAX_CAPACITY}")
        if "AddressingType" in spec:
            # Deprecated, and launch templates (which carry the annex's IMDS settings) have
            # no such field.
            raise BadInputError(f"{where}: AddressingType is deprecated and not supported; "
                                "leave it out")
        if "ImageId" in spec:
            validate.image_id(spec["ImageId"], f"{where}.ImageId")
        if isinstance(spec.get("UserData"), str) \
                and len(spec["UserData"]) > validate.MAX_USER_DATA_BASE64:
            raise BadInputError(f"{where}.UserData: {len(spec['UserData'])} characters of "
                                f"base64; EC2 accepts at most {validate.MAX_USER_DATA_BASE64}")
    if data.get("Type", "request") not in SPOT_FLEET_TYPES:
        raise BadInputError(f"{flag}: Type must be one of {', '.join(SPOT_FLEET_TYPES)} "
                            f"(got {validate.shown(data.get('Type'))})")
    if data.get("AllocationStrategy", _ALLOCATIONS[0]) not in _ALLOCATIONS:
        raise BadInputError(f"{flag}: AllocationStrategy must be one of "
                            f"{', '.join(_ALLOCATIONS)}")
    for key in ("IamFleetRole", "SpotPrice"):
        if key in data and not isinstance(data[key], str):
            raise BadInputError(f"{flag}: {key} must be a string")
    _check_against_ec2_model({**_SPOT_FLEET_FILLED_LATER, **data}, flag)
    _check_file_tags(data, flag)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _names(keys: list[str]) -> str:
    """Unknown keys for a message: each shown safely, at most five."""
    more = f", ... ({len(keys)} in all)" if len(keys) > 5 else ""
    return ", ".join(k if re.fullmatch(r"[A-Za-z]{1,40}", k) else validate.shown(k, 40)
                     for k in keys[:5]) + more


#: What a botocore type name means to someone writing JSON.
_JSON_KINDS = {"dict": "an object", "list": "a list", "tuple": "a list", "str": "a string",
               "int": "a whole number", "float": "a number", "bool": "true or false",
               "datetime": "a timestamp (e.g. 2030-01-01T00:00:00Z)"}


@functools.lru_cache(maxsize=1)
def _request_spot_fleet_shape():
    """RequestSpotFleet's input shape from botocore's bundled EC2 model (read once)."""
    from botocore.session import get_session
    return get_session().get_service_model("ec2").operation_model("RequestSpotFleet").input_shape


def _check_against_ec2_model(config: dict, flag: str) -> None:
    """Check ``config`` with botocore's ParamValidator against the EC2 model's RequestSpotFleet
    input; raise the first problem as one line (botocore's report has one line per problem and
    quotes whole values)."""
    from botocore.validate import ParamValidator

    try:
        report = ParamValidator().validate({"SpotFleetRequestConfig": config},
                                           _request_spot_fleet_shape())
    except RecursionError:
        raise BadInputError(f"{flag}: the config is nested too deeply") from None
    errors = getattr(report, "_errors", None)
    if errors is None:   # another botocore: its own first line, shortened
        if report.has_errors():
            first = report.generate_report().splitlines()[0]
            raise BadInputError(f"{flag}: {validate.shown(first, 160)[1:-1]}")
        return
    if not errors:
        return
    reason, name, details = errors[0]
    name = name.lstrip(".").removeprefix("SpotFleetRequestConfig").lstrip(".") or "the config"
    if reason == "invalid type":
        kinds = [t.split("'")[1].rsplit(".", 1)[-1] for t in details.get("valid_types", [])
                 if "'" in t]
        kind = " or ".join(dict.fromkeys(_JSON_KINDS.get(k, k) for k in kinds)) or "another type"
        problem = f"{name} must be {kind}"
    elif reason == "unknown field":
        problem = (f"{name}: unknown key {validate.shown(details.get('unknown_param'), 40)}; "
                   f"use one of {', '.join(sorted(details.get('valid_names', [])))[:200]}")
    elif reason == "missing required field":
        problem = f"{name}: {details.get('required_name')} is required"
    elif reason in ("invalid range", "invalid length"):
        what = "at least" if reason == "invalid range" else "of length at least"
        problem = f"{name} must be {what} {details.get('min_allowed')}"
    else:
        problem = f"{name}: {reason}"
    raise BadInputError(f"{flag}: {problem}")


def _check_file_tags(config: dict, flag: str) -> None:
    """Tags in the file's TagSpecifications follow the ``-tag`` rules (no aws:/htcondor: keys,
    at most :data:`validate.MAX_USER_TAGS` per resource type)."""
    specs = list(config.get("TagSpecifications", []))
    for spec in config["LaunchSpecifications"]:
        specs += spec.get("TagSpecifications", [])
    for spec in specs:
        pairs = [(t.get("Key"), t.get("Value", "")) for t in spec.get("Tags", [])]
        validate.tags(pairs, f"{flag}: TagSpecifications")


def parse_instance_types(text: str, flag: str = "--instance-types") -> tuple[tuple[str, float],
                                                                             ...]:
    """Parse ``"m5.large,c5.large:2"`` into ((type, weight), ...); the weight defaults to 1.

    Raises:
        BadInputError: empty, a malformed type, a weight that is not a number above 0 (ASCII
            digits, e.g. ``2`` or ``0.5``), or a type given twice.
    """
    out: list[tuple[str, float]] = []
    for item in (p.strip(" ") for p in (text or "").split(",")):
        if not item:
            continue
        name, _, weight_text = item.partition(":")
        validate.instance_type(name, flag)
        weight = 0.0
        if not weight_text:
            weight = 1.0
        elif re.fullmatch(r"[0-9]{1,6}(\.[0-9]{0,6})?|\.[0-9]{1,6}", weight_text, re.ASCII):
            weight = float(weight_text)
        if not 0 < weight <= MAX_CAPACITY:
            raise BadInputError(f"{flag}: weight {validate.shown(weight_text)} of {name} must "
                                "be a number above 0, e.g. m5.xlarge:2")
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
        max_price: ``--max-price``, USD per unit-hour as EC2 takes it (a decimal string), sent
            as each EC2 Fleet override's ``MaxPrice`` (:mod:`condor_annex.max_price`); ""
            for none (AWS's default: the On-Demand price).
    """

    api: str = SPOT_API_EC2_FLEET
    fleet_type: str = "instant"
    instance_types: tuple[tuple[str, float], ...] = ()
    allocation_strategy: str = ""
    spot_fleet_config: str = ""
    iam_fleet_role: str = ""
    default_user_data: bytes | None = None
    max_price: str = ""

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
        valid_until: the lease end at launch (aware UTC): the fleet's ``ValidUntil``, after
            which it places and replaces no instance; its instances are **not** terminated
            then (``TerminateInstancesWithExpiration`` false: ``ValidUntil`` cannot be moved,
            so the lease, which ``extend`` moves, ends them).
        image_id: AMI used where the spot spec names none.
        instance_profile_arn: IAM instance profile ARN (always ours: the agent needs it).
        security_group_ids: security groups (default for launch specs naming none).
        key_name: key pair, or ``None``.
        tags: extra (key, value) instance tags.
        user_data: raw user data for every instance, or ``None``.
        spot: the API and its settings.
        config_bucket: as :class:`LaunchRequest`.
        lease_end: tag ``htcondor:LeaseEnd`` on the fleet, its launch template, instances and
            volumes; None means ``valid_until``.
        subnet_ids: as :class:`LaunchRequest`; fleets spread over all of them (one override
            per instance type and subnet), except Spot Fleet launch specifications naming
            their own ``SubnetId`` or ``NetworkInterfaces``.
        owner: as :class:`LaunchRequest`.
        budget: as :class:`LaunchRequest`.
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
    lease_end: datetime | None = None
    subnet_ids: tuple[str, ...] = ()
    owner: str = ""
    budget: str = ""


@dataclass(frozen=True)
class FleetResult:
    """Answer to a Spot launch.

    Attributes:
        client_token: the request's token.
        fleet_id: ``sfr-...`` (Spot Fleet) or ``fleet-...`` (EC2 Fleet).
        instance_ids: instances known at once (an instant fleet's); others come later.
        launch_template_id: the annex's launch template (EC2 Fleet and Spot Fleet).
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



@dataclass(frozen=True)
class LeaseTagged:
    """What rewriting an annex's ``htcondor:LeaseEnd`` tag touched (``extend``).

    Attributes:
        instance_ids: live instances tagged.
        fleets: active fleets tagged (``sfr-...``, ``fleet-...``), each with its ``ValidUntil``
            (aware UTC) or None when the fleet has none or the cloud does not report it.
        launch_templates: launch templates tagged.
    """

    instance_ids: tuple[str, ...] = ()
    fleets: tuple[tuple[str, datetime | None], ...] = ()
    launch_templates: tuple[str, ...] = ()
