"""Use cases: create, status, extend, end.  Cloud-neutral; called by every CLI syntax.

Ordering follows the original tool and fixes its defects (reference §3, §7, §10):
bundle upload -> lease -> one bulk launch with client token ``<annex>_<uuid>``; a failure rolls
back what this call created (fleets and instances, then lease and bundle) so nothing is left
behind; ``end_annex`` removes
instances, lease and bundle.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from condor_annex.errors import (AnnexError, BadInputError, NotFoundError, PoolError,
                                 ProviderError)
from condor_annex.model import (DEFAULT_OFF_GRACE_SECONDS, SPOT_API_SPOT_FLEET, AnnexSpec,
                                BundleRef, CloudInstance, FleetRequest, LaunchRequest,
                                SetupOutputs, SpotSpec, bundle_key, new_client_token, utcnow)
from condor_annex.pool import configs
from condor_annex.pool.collector import SlotAd, annex_slots
from condor_annex.pool.tokens import mint_annex_token
from condor_annex.service.context import Context

log = logging.getLogger(__name__)

#: Extra token lifetime beyond the lease (seconds), so a node never outlives its credential
#: only because the lease was extended a little.
TOKEN_MARGIN_SECONDS = 3600


@dataclass(frozen=True)
class CreateResult:
    """What ``create`` did.

    Attributes:
        annex_name: the annex.
        client_token: the launch's idempotency token (its identity with the cloud).
        instance_ids: instances launched (for a fleet: those known at once).
        lease_expires_at: aware UTC datetime.
        fleet_id: a spot annex's ``sfr-...`` or ``fleet-...`` id, else "".
    """

    annex_name: str
    client_token: str
    instance_ids: tuple[str, ...]
    lease_expires_at: datetime
    fleet_id: str = ""


def _default_image(ctx: Context, spec: AnnexSpec) -> str:
    image_id = spec.image_id or ctx.image_id
    if not image_id:
        raise BadInputError("--image-id: no AMI is configured; pass --image-id ami-... or set "
                            "ANNEX_DEFAULT_ODI_IMAGE_ID")
    return image_id


#: What a launch step reports: (client token, instance ids, fleet id or "").
_Launched = tuple[str, tuple[str, ...], str]


def _with_bundle_and_lease(ctx: Context, spec: AnnexSpec,
                           launch: Callable[[SetupOutputs, object, datetime], _Launched]
                           ) -> CreateResult:
    """The steps every create shares: mint the annex's token, render and upload its bundle,
    create its lease, then call ``launch(outputs, provider, lease end)``; a failure anywhere
    after the upload removes the bundle and the lease this call made.

    Raises:
        NotSetUpError/BadInputError: before anything is created in the cloud.
        PoolError: the token could not be minted (nothing created).
        ProviderError: a cloud call failed (bundle and lease removed).
    """
    outputs = ctx.setup_outputs()
    collector = ctx.require_collector()
    token = mint_annex_token(spec.name, spec.lease_seconds + TOKEN_MARGIN_SECONDS,
                             command=ctx.token_command)
    bundle = configs.annex_bundle(annex_name=spec.name, collector=collector,
                                  trust_domain=ctx.trust_domain, idle_seconds=spec.idle_seconds,
                                  token=token, owners=spec.owners)
    del token
    provider = ctx.provider(outputs)
    expires_at = utcnow() + timedelta(seconds=spec.lease_seconds)
    ref = provider.put_bundle(spec.name, bundle)
    lease = None
    try:
        lease = provider.create_lease(spec.name, expires_at)
        # The lease's end is a whole second (rounded up); a fleet expires exactly with it.
        client_token, instance_ids, fleet_id = launch(outputs, provider, lease.expires_at)
    except BaseException:
        # From the lease on, a launch that failed on our side (a lost reply, a timeout, Ctrl-C)
        # may still have started instances or a fleet: end whatever carries the annex's tag
        # (the lease exists, so the name is this call's alone).  The lease and bundle go only
        # once that succeeded; otherwise the lease stays and ends the annex on time.
        if lease is None or _end_launched(provider, spec.name):
            if lease is not None:
                provider.delete_lease(lease)
            provider.delete_bundle(ref)
        raise
    return CreateResult(spec.name, client_token, instance_ids, expires_at, fleet_id)


def _end_members(provider, name: str, alive: list[str]):
    """Cancel the annex's fleets (CancelSpotFleetRequests / DeleteFleets, terminating their
    members), then terminate those of ``alive`` still alive (TerminateInstances).  Returns
    the :class:`FleetsEnded`."""
    fleets = provider.end_fleets(name)
    if alive and (fleets.spot_fleet_requests or fleets.fleets):
        # Ending a fleet terminated its members; terminate only what is still alive.
        still = {iid for iid, i in provider.query_instances(name).items() if i.alive}
        alive = [iid for iid in alive if iid in still]
    if alive:
        provider.terminate(alive)
    return fleets


def _end_launched(provider, name: str) -> bool:
    """Roll back a launch: end whatever carries the annex's tag (:func:`_end_members`).

    Returns:
        True when nothing of the annex is left running; False when a call failed (logged).
    """
    try:
        _end_members(provider, name,
                     [iid for iid, i in provider.query_instances(name).items() if i.alive])
        return True
    except Exception:   # noqa: BLE001 - the launch's own error is the one to raise
        log.warning("annex %s: could not end what the failed launch started; its lease stays "
                    "and ends it", name, exc_info=True)
        return False


def _instance_fields(spec: AnnexSpec, outputs: SetupOutputs) -> dict:
    """What every launch request of an annex carries, whatever the API: a fresh client token,
    setup's instance profile, security group, key pair and bucket, the user's tags and data."""
    return dict(annex_name=spec.name, client_token=new_client_token(spec.name),
                instance_profile_arn=outputs.instance_profile_arn,
                security_group_ids=(outputs.security_group_id,),
                key_name=outputs.key_name or None, tags=spec.tags, user_data=spec.user_data,
                config_bucket=outputs.bucket)


def create_annex(ctx: Context, spec: AnnexSpec) -> CreateResult:
    """Create an annex: bundle -> lease -> one bulk launch (EC2 RunInstances).

    Args:
        ctx: settings.
        spec: a validated request (name, count, lease/idle seconds, ...).

    Returns:
        :class:`CreateResult`.

    Raises:
        NotSetUpError/BadInputError: before anything is created in the cloud.
        PoolError: the token could not be minted (nothing created).
        ProviderError: a cloud call failed; the bundle and lease this call made are removed.
    """
    ctx.setup_outputs()
    ctx.require_collector()
    image_id = _default_image(ctx, spec)

    def launch(outputs: SetupOutputs, provider, lease_end: datetime) -> _Launched:
        request = LaunchRequest(count=spec.count, instance_type=spec.instance_type,
                                image_id=image_id, **_instance_fields(spec, outputs))
        result = provider.launch(request)
        return result.client_token, result.instance_ids, ""

    return _with_bundle_and_lease(ctx, spec, launch)


def check_spot(ctx: Context, spec: AnnexSpec, spot: SpotSpec) -> str:
    """What :func:`create_spot_annex` refuses, checked without a cloud call (the classic
    command line asks before its prompt).  Returns the AMI for specifications naming none.

    Raises:
        BadInputError: a Spot Fleet config without IamFleetRole, a launch specification
            without ImageId when no AMI is configured, or an EC2 Fleet without instance types.
    """
    flag = "-aws-spot-fleet-config-file"
    if spot.api != SPOT_API_SPOT_FLEET:
        if not spot.instance_types:
            raise BadInputError("--instance-types: give at least one instance type")
        return _default_image(ctx, spec)
    if not spot.fleet_role_arn():
        raise BadInputError(f"{flag}: the config has no IamFleetRole; add one (e.g. "
                            '"IamFleetRole": "arn:aws:iam::ACCOUNT:role/'
                            'aws-ec2-spot-fleet-tagging-role") or set '
                            "ANNEX_DEFAULT_SFR_IAM_FLEET_ROLE")
    specs = json.loads(spot.spot_fleet_config or "{}").get("LaunchSpecifications") or [{}]
    image_id = spec.image_id or ctx.image_id
    if not image_id and not all(s.get("ImageId") for s in specs):
        raise BadInputError(f"{flag}: a launch specification has no ImageId and no AMI is "
                            "configured; add ImageId to it or set ANNEX_DEFAULT_ODI_IMAGE_ID")
    return image_id


def create_spot_annex(ctx: Context, spec: AnnexSpec, spot: SpotSpec) -> CreateResult:
    """Create a spot annex: bundle -> lease -> one fleet request whose target capacity is
    ``spec.count`` weighted units, expiring with the lease (EC2 CreateFleet or RequestSpotFleet,
    as ``spot.api`` says).

    Args:
        ctx: settings.
        spec: a validated request; ``count`` is the weighted capacity.
        spot: the API and its settings (instance types and weights, or the Spot Fleet config).

    Returns:
        :class:`CreateResult` with the fleet id; ``instance_ids`` are those known at once (an
        instant fleet's), the others appear as the fleet fills.

    Raises:
        NotSetUpError/BadInputError: before anything is created in the cloud (e.g. no AMI, no
            Spot Fleet role, no instance type).
        PoolError: the token could not be minted (nothing created).
        CapacityError: an instant fleet got no capacity (bundle and lease removed).
        ProviderError: a cloud call failed; the bundle and lease this call made are removed.
    """
    ctx.setup_outputs()
    ctx.require_collector()
    image_id = check_spot(ctx, spec, spot)

    def launch(outputs: SetupOutputs, provider, lease_end: datetime) -> _Launched:
        request = FleetRequest(target_capacity=spec.count, valid_until=lease_end,
                               image_id=image_id, spot=spot, **_instance_fields(spec, outputs))
        result = provider.launch_fleet(request)
        return result.client_token, result.instance_ids, result.fleet_id

    return _with_bundle_and_lease(ctx, spec, launch)


@dataclass
class AnnexStatus:
    """One annex as the cloud and the pool see it.

    Attributes:
        name: annex name.
        requested: instances ever launched and still listed (any state).
        running: instances pending or running.
        joined: running instances with at least one slot in the collector.
        idle_slots / busy_slots: slots of running instances by activity.
        lease_expires_at: aware UTC datetime, or None when the annex has no lease.
        states: EC2 state name -> instances.
        not_joined: ids of running instances with no slot in the collector.
    """

    name: str
    requested: int = 0
    running: int = 0
    joined: int = 0
    idle_slots: int = 0
    busy_slots: int = 0
    lease_expires_at: datetime | None = None
    states: dict[str, int] = field(default_factory=dict)
    not_joined: list[str] = field(default_factory=list)

    def lease_seconds_left(self, now: datetime | None = None) -> float | None:
        """Seconds until the lease ends (negative when overdue), or None."""
        if self.lease_expires_at is None:
            return None
        return (self.lease_expires_at - (now or utcnow())).total_seconds()

    def as_dict(self) -> dict:
        """JSON-ready form (``--json``)."""
        left = self.lease_seconds_left()
        return {"name": self.name, "requested": self.requested, "running": self.running,
                "joined": self.joined, "idle_slots": self.idle_slots,
                "busy_slots": self.busy_slots,
                "lease_expires_at": self.lease_expires_at.isoformat()
                if self.lease_expires_at else None,
                "lease_seconds_left": None if left is None else round(left),
                "states": self.states, "not_joined": self.not_joined}


def join_status(instances: dict[str, CloudInstance], slots: list[SlotAd],
                name: str) -> AnnexStatus:
    """Join cloud state and collector ads for one annex (pure; no I/O).

    Slots whose ``EC2InstanceID`` is not a running instance are ignored: a hard-killed node
    leaves a stale ad in the collector for up to ~15 minutes.
    """
    st = AnnexStatus(name=name, requested=len(instances))
    running = {iid for iid, i in instances.items() if i.state in ("pending", "running")}
    for inst in instances.values():
        st.states[inst.state] = st.states.get(inst.state, 0) + 1
    joined: set[str] = set()
    for slot in slots:
        if slot.instance_id in running:
            joined.add(slot.instance_id)
            if slot.busy:
                st.busy_slots += 1
            else:
                st.idle_slots += 1
    st.running, st.joined = len(running), len(joined)
    st.not_joined = sorted(running - joined)
    return st


def annex_status(ctx: Context, name: str | None = None, *,
                 with_pool: bool = True) -> list[AnnexStatus]:
    """Status of one annex or of all (one DescribeInstances pass, one collector query).

    Returns:
        one :class:`AnnexStatus` per annex found in the cloud or holding a lease, by name.
    """
    outputs = _outputs_or_none(ctx)
    provider = ctx.provider(outputs)
    instances = provider.query_instances(name, include_terminated=True)
    by_annex: dict[str, dict[str, CloudInstance]] = {}
    for iid, inst in instances.items():
        by_annex.setdefault(inst.annex_name, {})[iid] = inst
    leases = {}
    if outputs is not None:
        if name is not None:
            lease = provider.get_lease(name)
            leases = {name: lease} if lease else {}
        else:
            leases = {lease.annex_name: lease for lease in provider.list_leases()}
    slots: list[SlotAd] = []
    if with_pool and ctx.collector and (by_annex or leases):
        try:
            slots = annex_slots(ctx.collector, name)
        except PoolError:
            slots = []
    result = []
    for annex in sorted(set(by_annex) | set(leases)):
        st = join_status(by_annex.get(annex, {}), [s for s in slots if s.annex_name == annex],
                         annex)
        if annex in leases:
            st.lease_expires_at = leases[annex].expires_at
        result.append(st)
    return result


def _outputs_or_none(ctx: Context):
    try:
        return ctx.setup_outputs()
    except BadInputError:
        return None


@dataclass(frozen=True)
class EndResult:
    """What ``off`` did: instances terminated, fleets ended, lease and bundle deleted.

    Attributes:
        terminated: every instance that was alive (pending or running) when ``off`` started.
        left_pool: those of them that were in the pool, left it gracefully and powered off by
            themselves within the grace period; the rest were terminated.
        spot_fleet_requests / fleets / launch_templates: what ending the annex's fleets did
            (Spot Fleet requests cancelled, EC2 Fleets and launch templates deleted).
    """

    annex_name: str
    terminated: tuple[str, ...]
    lease_deleted: bool
    bundle_deleted: bool
    spot_fleet_requests: tuple[str, ...] = ()
    fleets: tuple[str, ...] = ()
    launch_templates: tuple[str, ...] = ()
    left_pool: tuple[str, ...] = ()


def end_annex(ctx: Context, name: str, *, grace_s: float = DEFAULT_OFF_GRACE_SECONDS,
              progress: Callable[[int, int], None] | None = None,
              poll_s: float = 1.0) -> EndResult:
    """End an annex completely.  First, nodes in the pool are asked to leave it gracefully (EC2
    CreateTags ``htcondor:AnnexOff``; each agent shuts HTCondor down as ``condor_off -annex``
    would, so jobs are vacated back to the queue and the slots withdraw their ads) and given
    ``grace_s`` seconds to power off.  Then its fleets are cancelled (Spot Fleet requests, EC2
    Fleets) so none replaces an instance, every instance still alive is terminated (also those
    not yet in the pool), and its launch template, lease and bundle are deleted.

    Args:
        grace_s: seconds to wait for in-pool nodes to leave by themselves; 0 terminates at once.
        progress: called with (nodes gone, nodes asked to leave) while waiting.
        poll_s: seconds between DescribeInstances polls while waiting.

    Raises:
        NotFoundError: nothing of that annex exists (no instance, fleet, lease or bundle).
    """
    outputs = ctx.setup_outputs()
    provider = ctx.provider(outputs)
    alive = [iid for iid, i in provider.query_instances(name).items() if i.alive]
    lease = provider.get_lease(name)
    has_bundle = provider.bundle_exists(name)
    left: tuple[str, ...] = ()
    if alive and grace_s > 0:
        left = _leave_pool(ctx, provider, name, alive, grace_s, progress, poll_s)
    fleets = _end_members(provider, name, [iid for iid in alive if iid not in left])
    if not (alive or lease or has_bundle or fleets.spot_fleet_requests or fleets.fleets
            or fleets.launch_templates):
        raise NotFoundError(f"annex '{name}': no instances, lease or bundle found")
    if lease is not None:
        provider.delete_lease(lease)
    if has_bundle:
        provider.delete_bundle(BundleRef(outputs.bucket, bundle_key(name)))
    return EndResult(name, tuple(alive), lease is not None, has_bundle,
                     fleets.spot_fleet_requests, fleets.fleets, fleets.launch_templates, left)


def _leave_pool(ctx: Context, provider, name: str, alive: list[str], grace_s: float,
                progress: Callable[[int, int], None] | None, poll_s: float) -> tuple[str, ...]:
    """Ask the annex's in-pool nodes to leave gracefully; wait up to ``grace_s`` seconds.

    Returns:
        ids of the nodes that powered off by themselves in time (best effort: an unreachable
        collector or a failed CreateTags skips the graceful step, never the ending).
    """
    if not ctx.collector:
        return ()
    try:
        in_pool = {s.instance_id for s in annex_slots(ctx.collector, name)} & set(alive)
    except PoolError as e:
        log.info("annex %s: no graceful stop (%s)", name, e)
        return ()
    if not in_pool:
        return ()
    try:
        provider.request_stop(sorted(in_pool), utcnow())
    except ProviderError as e:
        log.warning("annex %s: no graceful stop (%s)", name, e)
        return ()
    deadline = time.monotonic() + grace_s
    while True:
        up = {iid for iid, i in provider.query_instances(name).items()
              if i.state in ("pending", "running")} & in_pool
        if progress:
            progress(len(in_pool) - len(up), len(in_pool))
        if not up or time.monotonic() >= deadline:
            return tuple(sorted(in_pool - up))
        time.sleep(poll_s)


def extend_lease(ctx: Context, name: str, lease_seconds: int) -> datetime:
    """Move an annex's lease to ``now + lease_seconds``; never changes the annex's type.

    Raises:
        BadInputError: the annex has no lease (unknown annex; the original created one anyway).
    """
    provider = ctx.provider(ctx.setup_outputs())
    lease = provider.get_lease(name)
    if lease is None:
        raise BadInputError(f"--annex-name: no annex named '{name}' has a lease; check "
                            "'condor_annex status'")
    expires_at = utcnow() + timedelta(seconds=lease_seconds)
    provider.extend_lease(lease, expires_at)
    return expires_at


def wait_for_join(ctx: Context, name: str, count: int, *, timeout_s: float,
                  progress: Callable[[int, int], None] | None = None,
                  poll_s: float | None = None, cloud_poll_s: float = 2.0) -> int:
    """Wait until ``count`` instances of the annex have slots in the collector.

    The collector (local, cheap) is asked every ``poll_s`` seconds; the cloud (one paginated
    DescribeInstances) every ``cloud_poll_s`` seconds, to ignore stale ads of ended instances
    and to notice when every instance ended before joining.

    Args:
        progress: called with (joined, count) after each poll.
        poll_s: seconds between collector queries; by default 0.1 s at first, growing by 0.01 s
            per second waited up to 1 s (a join is noticed within 0.1 s early on, and a long
            wait does not query the collector ten times a second).
        cloud_poll_s: seconds between DescribeInstances calls.

    Returns:
        instances joined (``count`` on success).

    Raises:
        AnnexError: the timeout passed first, or every instance ended before joining.
        ProviderError: DescribeInstances failed.
    """
    started = time.monotonic()
    provider = ctx.provider(_outputs_or_none(ctx))
    instances: dict[str, CloudInstance] = {}
    next_cloud = started
    while True:
        now = time.monotonic()
        if now >= next_cloud:
            instances = provider.query_instances(name, include_terminated=True)
            next_cloud = now + cloud_poll_s
        slots: list[SlotAd] = []
        if ctx.collector:
            try:
                slots = annex_slots(ctx.collector, name)
            except PoolError as e:
                log.debug("annex %s: collector not answering yet: %s", name, e)
        st = join_status(instances, slots, name)
        if progress:
            progress(st.joined, count)
        if st.joined >= count:
            return st.joined
        if st.requested and not st.running:
            raise AnnexError(f"annex '{name}': every instance ended before joining "
                             f"({st.joined}/{count} joined)")
        waited = time.monotonic() - started
        if waited > timeout_s:
            raise AnnexError(f"annex '{name}': {st.joined}/{count} joined after "
                             f"{timeout_s:.0f} s")
        time.sleep(poll_s if poll_s is not None else min(1.0, 0.1 + waited / 100))


def wait_for_end(ctx: Context, name: str, *, timeout_s: float,
                 progress: Callable[[int], None] | None = None, poll_s: float = 2.0) -> None:
    """Wait until no instance of the annex is pending or running.

    Raises:
        AnnexError: the timeout passed first.
    """
    deadline = time.monotonic() + timeout_s
    provider = ctx.provider(_outputs_or_none(ctx))
    while True:
        alive = [i for i in provider.query_instances(name).values()
                 if i.state in ("pending", "running", "shutting-down")]
        if progress:
            progress(len(alive))
        if not alive:
            return
        if time.monotonic() > deadline:
            raise AnnexError(f"annex '{name}': {len(alive)} instances still alive after "
                             f"{timeout_s:.0f} s")
        time.sleep(poll_s)


def setup_cloud(ctx: Context, progress: Callable[[str], None] | None = None):
    """Run ``setup`` and record its outputs in the user's config (a managed block, replaced on
    re-run).  Returns the :class:`SetupOutputs`."""
    from condor_annex import config
    outputs = ctx.provider().setup(progress=progress)
    config.write_block("setup", config.setup_knobs(outputs))
    return outputs


def teardown_cloud(ctx: Context, *, force: bool = False):
    """Undo ``setup``: delete what it made (bucket contents, the stack, the key pair) and its
    block in the user's config.  Returns the :class:`SetupOutputs` that were removed.

    Raises:
        NotSetUpError: setup outputs are missing (nothing to remove).
        InvalidRequestError: annex leases remain and ``force`` is False (their lease enforcer
            would be deleted and their instances would run unbounded).
        ProviderError: the deletion failed or timed out.
    """
    from condor_annex import config
    outputs = ctx.setup_outputs()
    ctx.provider(outputs).teardown(outputs, force=force)
    config.remove_block("setup")
    return outputs


def check_setup(ctx: Context) -> list[tuple[str, bool, str]]:
    """Inspect what ``setup`` made; one (resource, ok, detail) row per resource."""
    outputs = ctx.setup_outputs()
    return ctx.provider(outputs).check_setup(outputs)


def annex_instances(ctx: Context, name: str | None = None) -> dict[str, dict[str, CloudInstance]]:
    """Every instance of one annex, or of every annex, terminated ones included, grouped by
    annex (one paginated DescribeInstances pass; ``-status -classads`` lists ids per state).

    Returns:
        annex name -> {instance id: :class:`CloudInstance`}.

    Raises:
        ProviderError: the query failed.
    """
    provider = ctx.provider(_outputs_or_none(ctx))
    by_annex: dict[str, dict[str, CloudInstance]] = {}
    for iid, inst in provider.query_instances(name, include_terminated=True).items():
        by_annex.setdefault(inst.annex_name, {})[iid] = inst
    return by_annex
