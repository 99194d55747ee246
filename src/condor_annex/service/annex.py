"""Use cases: create, status, extend, end.  Cloud-neutral; called by every CLI syntax.

Ordering fixes the original tool's defects (reference §3, §7, §10) so that a kill -9 at any
moment leaves nothing that nothing will end: ``create`` makes the lease first, then uploads the
bundle, then launches in bulk with client token ``<annex>_<uuid>`` (also a tag on all it makes);
a failure ends only what carries that token.  ``end_annex`` ends instances and fleets, then the
bundle, then the lease.  Both hold the annex's lock (:mod:`condor_annex.service.locks`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from condor_annex.errors import (AnnexError, BadInputError, LeaseWouldShortenError,
                                 NotSetUpError, PoolError, ProviderError, UnknownAnnexError)
from condor_annex.model import (DEFAULT_OFF_GRACE_SECONDS, SPOT_API_SPOT_FLEET, AnnexSpec,
                                BundleRef, CloudInstance, FleetRequest,
                                LaunchRequest, LeaseRef, SetupOutputs, SpotSpec, bundle_key,
                                new_client_token, parse_subnet_ids, utcnow)
from condor_annex.pool import configs
from condor_annex.pool.collector import SlotAd, annex_slots
from condor_annex.pool.tokens import mint_annex_token
from condor_annex.providers.base import Provider
from condor_annex.reconciler import ending
from condor_annex.reconciler.annex_status import AnnexStatus, join_status
from condor_annex.service import recording
from condor_annex.service.context import Context
from condor_annex.service.converge import converge, daemon_pid, reconcile_once
from condor_annex.state.locks import annex_lock

log = logging.getLogger(__name__)

#: Extra token lifetime beyond the lease end (seconds): the clock skew allowed between this
#: host and the pool (at most 5 min).  The token lives the lease, never longer; ``extend``
#: re-mints it for the new end.
TOKEN_MARGIN_SECONDS = 300


def _whole_second(when: datetime) -> datetime:
    """``when`` rounded up to a whole second (what a lease's schedule and tags hold)."""
    return datetime.fromtimestamp(math.ceil(when.timestamp()), timezone.utc)


def _mint_for(ctx: Context, name: str, end: datetime) -> str:
    """The annex's IDTOKEN, living until ``end`` plus :data:`TOKEN_MARGIN_SECONDS`."""
    lifetime = math.ceil((end - utcnow()).total_seconds()) + TOKEN_MARGIN_SECONDS
    return mint_annex_token(name, max(lifetime, TOKEN_MARGIN_SECONDS),
                            command=ctx.token_command)


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
    """The AMI id given or configured, or "" (a name then resolves: ``--image``, else
    ``debian-13``; :mod:`condor_annex.service.launch_image`)."""
    return spec.image_id or ctx.image_id


@dataclass(frozen=True)
class _Launched:
    """What a launch step reports: its client token, instance ids, fleet id or ""."""

    client_token: str
    instance_ids: tuple[str, ...]
    fleet_id: str = ""


#: A launch step: (setup outputs, provider, lease end, client token) -> what it launched.
_LaunchStep = Callable[[SetupOutputs, Provider, datetime, str], _Launched]


def _create(ctx: Context, spec: AnnexSpec, launch: _LaunchStep,
            kind: str = "on-demand") -> CreateResult:
    """The steps every create shares, ordered so that a kill -9 at any moment leaves nothing
    that nothing will end (issue 8):

    1. under the annex's lock (:mod:`condor_annex.service.locks`), look at the annex: a new
       one, or one that exists (it has a lease or live instances) and gets more instances;
    2. the **lease first** (a new annex), so every later piece has something that ends it;
       adding never moves an existing lease earlier (:class:`LeaseWouldShortenError` before
       anything is touched) and moves it later only for an explicit longer ``--duration``,
       after the launch succeeded;
    3. the bundle (token minted for the lease end plus at most 5 min of clock skew, and
       ``AnnexLeaseEnd``), replaced in place;
    4. the annex's own instance profile and role (:mod:`condor_annex.providers.aws.annex_role`:
       it may read only this annex's bundle), made for a new annex and reused when adding,
       unless the instance profile is the user's own (:func:`uses_annex_role`);
    5. the launch, tagged with its own client token and the lease end; a failure ends only
       what carries that token (:func:`_roll_back`), and deletes bundle, role and lease only of
       an annex this call created, and only once nothing of the request is left;
    6. the lease is looked up again: if ``off`` (from another machine) or the lease enforcer
       removed it meanwhile, what this call launched is ended and the create fails; a longer
       explicit lease then moves the lease tags and the schedule (as ``extend``).

    Raises:
        NotSetUpError/BadInputError: before anything is created in the cloud.
        LeaseWouldShortenError: adding with a ``--duration`` that would end the annex sooner.
        PoolError: the token could not be minted (nothing created).
        ProviderError: a cloud call failed (what this call made is removed, see above).
    """
    outputs = ctx.setup_outputs()
    collector = ctx.require_collector()
    provider = ctx.provider(outputs)
    with annex_lock(spec.name, notify=ctx.notify):
        lease = provider.get_lease(spec.name)
        adding = lease is not None or any(
            i.alive for i in provider.query_instances(spec.name).values())
        wanted_end = _whole_second(utcnow() + timedelta(seconds=spec.lease_seconds))
        end = wanted_end
        if lease is not None:
            if spec.lease_explicit and wanted_end < lease.expires_at - timedelta(seconds=1):
                raise LeaseWouldShortenError(spec.name, lease.expires_at, wanted_end)
            end = max(lease.expires_at, wanted_end) if spec.lease_explicit \
                else lease.expires_at
        client_token = new_client_token(spec.name)
        # Token and bundle are made locally first: a pool that refuses to mint stops the
        # create before anything is recorded or made.
        token = _mint_for(ctx, spec.name, end)
        bundle = configs.annex_bundle(annex_name=spec.name, collector=collector,
                                      trust_domain=ctx.trust_domain,
                                      idle_seconds=spec.idle_seconds, token=token,
                                      owners=spec.owners, lease_end=math.ceil(end.timestamp()))
        del token
        # The store before the cloud (issue 11): if it cannot be written, nothing is made.
        recording.record_create(ctx.knobs, spec, kind=kind, lease_end=end,
                                client_token=client_token)
        created_lease = lease is None
        try:
            if lease is None:
                lease = provider.create_lease(spec.name, end)
            ref = provider.put_bundle(spec.name, bundle)
        except BaseException:
            # Nothing was launched; a pass ends what this annex still has (a lease without
            # a bundle ends by itself too).
            recording.record_outcome(ctx.knobs, spec.name, client_token, "failed")
            raise
        try:
            if uses_annex_role(outputs):
                # The annex's own role (reads only its bundle), after the lease so that a
                # kill -9 leaves something that ends it; reused when adding.
                outputs = dataclasses.replace(
                    outputs, instance_profile_arn=provider.ensure_annex_role(spec.name))
            # The lease end the annex will have: new instances and fleets carry it at once.
            launched = launch(outputs, provider, max(end, lease.expires_at), client_token)
        except BaseException as e:
            # A launch refused because ``off`` (from another machine) ended the annex meanwhile
            # (its instance profile is gone): say so, rather than the launch's own error.
            removed = isinstance(e, ProviderError) and _lease_gone(provider, spec.name)
            _roll_back(ctx, provider, spec.name, client_token, error=e,
                       new_annex=not adding and created_lease, lease=lease, bundle=ref)
            recording.record_outcome(ctx.knobs, spec.name, client_token, "failed")
            if removed:
                raise _lease_removed(spec.name) from e
            raise
        recording.record_outcome(ctx.knobs, spec.name, client_token, "launched",
                                 launched.instance_ids)
        if provider.get_lease(spec.name) is None:
            _roll_back(ctx, provider, spec.name, client_token, error=None, new_annex=False,
                       lease=lease, bundle=ref)
            recording.record_outcome(ctx.knobs, spec.name, client_token, "rolled-back")
            try:
                # The annex was ended meanwhile; this call may have made its role again.
                provider.delete_annex_role(spec.name)
            except ProviderError:
                log.warning("annex %s: could not delete its role", spec.name, exc_info=True)
            raise _lease_removed(spec.name)
        if end > lease.expires_at:
            provider.set_lease_end(spec.name, end)
            lease = provider.extend_lease(lease, end)
    return CreateResult(spec.name, launched.client_token, launched.instance_ids,
                        lease.expires_at, launched.fleet_id)


def _lease_gone(provider: Provider, name: str) -> bool:
    """True when the annex surely has no lease (False when GetSchedule fails)."""
    try:
        return provider.get_lease(name) is None
    except ProviderError:
        return False


def _lease_removed(name: str) -> AnnexError:
    return AnnexError(f"annex '{name}': its lease was removed while this create was launching "
                      "(condor_annex off, or the lease ended); what this create launched has "
                      "been ended")


def _roll_back(ctx: Context, provider: Provider, name: str, client_token: str, *,
               error: BaseException | None, new_annex: bool, lease: LeaseRef,
               bundle: BundleRef) -> None:
    """Undo one launch request: end what carries its token, then (a new annex only) its
    bundle and then its lease.

    A failure that may have launched something (a lost reply, a 5xx, Ctrl-C while the call was
    out: anything but a definite refusal) is looked for again during ``ctx.listing_lag_s``
    seconds, with jittered re-queries, since EC2's listings lag its launches.  When ending
    fails, the lease stays and ends the annex on time; the launch's own error is the one
    raised by the caller.
    """
    definite = isinstance(error, ProviderError) and not error.ambiguous and not error.retryable
    wait_s = 0.0 if definite else ctx.listing_lag_s
    try:
        ended = _end_request(ctx, provider, name, client_token, wait_s=wait_s)
        if new_annex:
            # Bundle and role before lease: a kill -9 in between leaves a lease, never a lone
            # bundle or role.
            provider.delete_bundle(bundle)
            provider.delete_annex_role(name)
            provider.delete_lease(lease)
        if ended:
            log.info("annex %s: rolled back launch %s: ended %s", name, client_token, ended)
    except Exception:   # noqa: BLE001 - the launch's own error is the one to raise
        log.warning("annex %s: could not roll back launch %s; its lease stays and ends it",
                    name, client_token, exc_info=True)


def _end_request(ctx: Context, provider: Provider, name: str, client_token: str, *,
                 wait_s: float) -> list[str]:
    """End what carries ``client_token``
    (:func:`condor_annex.reconciler.ending.end_launch_request`), telling the user why it
    looks again when it does."""
    if wait_s:
        ctx.notify(f"annex {name}: the launch failed; looking for up to {wait_s:.0f} s for "
                   "anything it started (EC2's listings lag) to end it")
    return ending.end_launch_request(provider, name, client_token, wait_s=wait_s)


#: IAM path of setup's shared instance profile (the stack's ``InstanceProfile``).
SETUP_PROFILE_PATH = ":instance-profile/condor-annex/"


def uses_annex_role(outputs: SetupOutputs) -> bool:
    """True when annexes launch with their own instance profile: the recorded instance
    profile is setup's shared one (path ``/condor-annex/``).  A profile the user gave instead
    (``-aws-on-demand-instance-profile-arn``, ``ANNEX_DEFAULT_ODI_INSTANCE_PROFILE_ARN``) is
    used as it is, with whatever it allows."""
    arn = outputs.instance_profile_arn
    return SETUP_PROFILE_PATH in arn and ":instance-profile/condor-annex/annex/" not in arn


def _instance_fields(spec: AnnexSpec, outputs: SetupOutputs, client_token: str,
                     lease_end: datetime, subnet_ids: tuple[str, ...],
                     user_data: bytes | None) -> dict:
    """What every launch request of an annex carries, whatever the API: its client token,
    the lease end (tag ``htcondor:LeaseEnd``), setup's instance profile, security group, key
    pair and bucket, the subnets, the user's tags, and the user data (our bootstrap combined
    with the user's, :mod:`condor_annex.service.launch_image`)."""
    return dict(annex_name=spec.name, client_token=client_token,
                instance_profile_arn=outputs.instance_profile_arn,
                security_group_ids=(outputs.security_group_id,),
                key_name=outputs.key_name or None, tags=spec.tags, user_data=user_data,
                config_bucket=outputs.bucket, lease_end=lease_end, subnet_ids=subnet_ids)


#: Knob listing the subnets annexes launch into (comma-separated), for accounts without a
#: default VPC; ``--subnet-id`` replaces it.
SUBNET_KNOB = "ANNEX_DEFAULT_SUBNET_IDS"


def check_subnets(ctx: Context, spec: AnnexSpec) -> tuple[str, ...]:
    """The subnets of a create: ``spec.subnet_ids`` (``--subnet-id``), else the knob
    ``ANNEX_DEFAULT_SUBNET_IDS`` (region-prefixed form first), else () (the default VPC).
    Each must exist: one EC2 DescribeSubnets call, before anything is created.

    Raises:
        BadInputError: a knob value that is not a list of subnet ids, or a subnet that does not
            exist (naming ``--subnet-id`` or the knob); exit 2, nothing created.
        ProviderError: DescribeSubnets failed.
    """
    from condor_annex import config
    if spec.subnet_ids:
        flag, ids = "--subnet-id", spec.subnet_ids
    else:
        text = config.knob(ctx.knobs, SUBNET_KNOB, ctx.aws.region)
        if not text:
            return ()
        flag, ids = SUBNET_KNOB, parse_subnet_ids(text, SUBNET_KNOB)
    missing = ctx.provider(_outputs_or_none(ctx)).missing_subnets(ids)
    if missing:
        fix = ("give a subnet of this region (see 'aws ec2 describe-subnets')"
               if flag == "--subnet-id" else f"fix {SUBNET_KNOB} in ~/.condor/user_config")
        raise BadInputError(f"{flag}: subnet {missing[0]} does not exist in region "
                            f"{ctx.aws.region}; {fix}")
    return ids


def create_annex(ctx: Context, spec: AnnexSpec) -> CreateResult:
    """Create an annex, or add instances to one: lease -> bundle -> one bulk launch (EC2
    RunInstances); see :func:`_create` for the order and what a failure undoes.

    Args:
        ctx: settings.
        spec: a validated request (name, count, lease/idle seconds, ...).

    Returns:
        :class:`CreateResult`.

    Raises:
        NotSetUpError/BadInputError: before anything is created in the cloud.
        LeaseWouldShortenError: adding with an explicit lease that ends sooner (nothing done).
        PoolError: the token could not be minted (nothing created).
        ProviderError: a cloud call failed; what this request made is removed, and the bundle
            and lease too when the annex is new.
    """
    from condor_annex.service.launch_image import launch_image
    recorded = ctx.setup_outputs()
    ctx.require_collector()
    converge(ctx)   # finish what a killed command left (no daemon: nobody else will)
    subnets = check_subnets(ctx, spec)
    chosen = launch_image(ctx, spec, recorded, instance_type=spec.instance_type)
    image_id = chosen.image.image_id

    def launch(outputs: SetupOutputs, provider: Provider, lease_end: datetime,
               client_token: str) -> _Launched:
        request = LaunchRequest(count=spec.count, instance_type=spec.instance_type,
                                image_id=image_id,
                                **_instance_fields(spec, outputs, client_token, lease_end,
                                                   subnets, chosen.user_data))
        result = provider.launch(request, notify=ctx.notify)
        return _Launched(result.client_token, result.instance_ids)

    return _create(ctx, spec, launch)


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
    # Specifications without ImageId take the resolved image (default debian-13).
    return spec.image_id or ctx.image_id


def create_spot_annex(ctx: Context, spec: AnnexSpec, spot: SpotSpec) -> CreateResult:
    """Create a spot annex: lease -> bundle -> one fleet request whose target capacity is
    ``spec.count`` weighted units (EC2 CreateFleet or RequestSpotFleet, as ``spot.api`` says).
    The fleet's ``ValidUntil`` is the lease end at launch and cannot be moved: it stops the
    fleet placing or replacing instances then, without terminating them
    (``TerminateInstancesWithExpiration`` false), so ``extend`` keeps the instances.

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
    from condor_annex.service.launch_image import (check_architectures, launch_image,
                                                   spot_fleet_with_bootstrap)
    recorded = ctx.setup_outputs()
    ctx.require_collector()
    check_spot(ctx, spec, spot)
    converge(ctx)
    subnets = check_subnets(ctx, spec)
    if spot.api == SPOT_API_SPOT_FLEET:
        specs = json.loads(spot.spot_fleet_config or "{}").get("LaunchSpecifications") or [{}]
        chosen = launch_image(ctx, spec, recorded,
                              instance_type=specs[0].get("InstanceType") or spec.instance_type)
        # Each specification's own user data is combined with the bootstrap, never dropped.
        spot = spot_fleet_with_bootstrap(spot, spec, chosen.bootstrap)
        user_data = None
    else:
        chosen = launch_image(ctx, spec, recorded, instance_type=spot.instance_types[0][0])
        check_architectures(ctx, chosen.image, [t for t, _w in spot.instance_types])
        user_data = chosen.user_data
    image_id = chosen.image.image_id

    def launch(outputs: SetupOutputs, provider: Provider, lease_end: datetime,
               client_token: str) -> _Launched:
        request = FleetRequest(target_capacity=spec.count, valid_until=lease_end,
                               image_id=image_id, spot=spot,
                               **_instance_fields(spec, outputs, client_token, lease_end,
                                                  subnets, user_data))
        result = provider.launch_fleet(request, notify=ctx.notify)
        return _Launched(result.client_token, result.instance_ids, result.fleet_id)

    return _create(ctx, spec, launch, kind=spot.api)


def annex_status(ctx: Context, name: str | None = None, *,
                 with_pool: bool = True, must_exist: bool = False,
                 refresh: bool = False) -> list[AnnexStatus]:
    """Status of one annex or of all.

    When annexd serves the state file, the answer is the store's, as of the daemon's last
    pass (:attr:`AnnexStatus.as_of`; no cloud call), unless ``refresh`` runs a pass first.
    Without a daemon: one pass in-process (:func:`condor_annex.service.converge.converge`),
    then one DescribeInstances pass and one collector query, with the lifecycle counts and
    reasons the store holds.

    Args:
        must_exist: with ``name``, refuse an annex the cloud knows nothing of (the modern
            ``status NAME``; the classic ``-status`` prints an empty answer instead).
        refresh: with a daemon, run a pass now and answer from it.

    Returns:
        one :class:`AnnexStatus` per annex found in the cloud or holding a lease, by name.

    Raises:
        UnknownAnnexError: ``must_exist`` and nothing of ``name`` exists.
    """
    from condor_annex.service import store_status
    outputs = _outputs_or_none(ctx)
    if outputs is not None and daemon_pid(ctx) is not None:
        if refresh:
            reconcile_once(ctx)
        return store_status.from_store(ctx, name, must_exist=must_exist)
    if outputs is not None:
        converge(ctx)
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
    if name is not None and must_exist and not result:
        raise unknown_annex(provider, name)
    store_status.add_lifecycle(ctx, result)
    return result


def _outputs_or_none(ctx: Context):
    try:
        return ctx.setup_outputs()
    except BadInputError:
        return None


@dataclass(frozen=True)
class EndResult:
    """What ``off`` did: instances terminated, fleets ended, lease, bundle and the annex's
    own instance profile and role deleted.

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
    role_deleted: bool = False


def end_annex(ctx: Context, name: str, *, grace_s: float = DEFAULT_OFF_GRACE_SECONDS,
              progress: Callable[[int, int], None] | None = None,
              poll_s: float = 1.0) -> EndResult:
    """End an annex completely.  First, nodes in the pool are asked to leave it gracefully (EC2
    CreateTags ``htcondor:AnnexOff``; each agent shuts HTCondor down as ``condor_off -annex``
    would, so jobs are vacated back to the queue and the slots withdraw their ads) and given
    ``grace_s`` seconds to power off.  Then its fleets are cancelled (Spot Fleet requests, EC2
    Fleets) so none replaces an instance, every instance still alive is terminated (also those
    not yet in the pool), and its launch template, bundle, own instance profile and role
    (IAM), and lease are deleted.

    Args:
        grace_s: seconds to wait for in-pool nodes to leave by themselves; 0 terminates at once.
        progress: called with (nodes gone, nodes asked to leave) while waiting.
        poll_s: seconds between DescribeInstances polls while waiting.

    Raises:
        UnknownAnnexError: nothing of that annex exists (no instance, fleet, lease or bundle).
    """
    outputs = ctx.setup_outputs()
    provider = ctx.provider(outputs)
    # An off killed part-way is finished by this pass; this off then has nothing left to do.
    finishing = recording.off_pending(ctx.knobs, name)
    converge(ctx)
    with annex_lock(name, notify=ctx.notify):
        # The desired state first: if this command dies part-way, a pass finishes the off.
        recording.record_off(ctx.knobs, name)
        alive = [iid for iid, i in provider.query_instances(name).items() if i.alive]
        lease = provider.get_lease(name)
        has_bundle = provider.bundle_exists(name)
        left: tuple[str, ...] = ()
        if alive and grace_s > 0:
            left = _leave_pool(ctx, provider, name, alive, grace_s, progress, poll_s)
        ended = ending.end_annex_resources(provider, name, outputs.bucket,
                                           alive=[iid for iid in alive if iid not in left],
                                           lease=lease, has_bundle=has_bundle)
        if not ended.found and not finishing:
            recording.record_ended(ctx.knobs, name)
            raise unknown_annex(provider, name)
        recording.record_ended(ctx.knobs, name)
        fleets = ended.fleets
    return EndResult(name, tuple(alive), ended.lease_deleted, ended.bundle_deleted,
                     fleets.spot_fleet_requests, fleets.fleets, fleets.launch_templates, left,
                     ended.role_deleted)


def known_annexes(provider: Provider) -> list[str]:
    """Names of every annex with a live instance or a lease (one DescribeInstances pass and
    one lease listing), sorted."""
    names = {i.annex_name for i in provider.query_instances().values() if i.alive}
    try:
        names |= {lease.annex_name for lease in provider.list_leases()}
    except NotSetUpError:
        pass
    return sorted(n for n in names if n)


def unknown_annex(provider: Provider, name: str) -> UnknownAnnexError:
    """The error for a command naming an annex that does not exist, with the closest names.

    Returns (does not raise) an :class:`UnknownAnnexError`: exit 2, one line.
    """
    try:
        close = difflib.get_close_matches(name, known_annexes(provider), n=3, cutoff=0.5)
    except ProviderError:
        close = []
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return UnknownAnnexError(f"annex '{name}' does not exist (no instance, fleet, lease or "
                             f"bundle); {hint}see 'condor_annex status'")


def _leave_pool(ctx: Context, provider: Provider, name: str, alive: list[str], grace_s: float,
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


@dataclass(frozen=True)
class ExtendResult:
    """What ``extend`` did.

    Attributes:
        annex_name: the annex.
        lease_expires_at: the new lease end (aware UTC, whole second).
        previous_end: the lease end before.
        instance_ids: live instances whose ``htcondor:LeaseEnd`` tag was rewritten.
        fleets: fleets whose tag was rewritten.
        fleets_stopping: (fleet id, ValidUntil) of fleets whose unchangeable ``ValidUntil``
            comes before the new end: they stop placing and replacing instances then (their
            instances keep running until the lease ends).
    """

    annex_name: str
    lease_expires_at: datetime
    previous_end: datetime
    instance_ids: tuple[str, ...] = ()
    fleets: tuple[str, ...] = ()
    fleets_stopping: tuple[tuple[str, datetime], ...] = ()


#: Lines of ``config.d/50-annex.config`` (:func:`configs.annex_config`) that ``extend`` reads
#: back to re-render the bundle as ``create`` made it.
_CONFIG_LINE = re.compile(r"([A-Za-z_.]+) = (.*)")
_OWNERS_START = re.compile(r'stringListMember\(TARGET\.Owner, "([^"]*)"\)')


def bundle_settings(bundle: bytes) -> dict:
    """What ``create`` rendered into an annex's bundle and ``extend`` keeps: the collector,
    trust domain, idle time (seconds) and owners, read back from its
    ``config.d/50-annex.config`` (the format of :func:`condor_annex.pool.configs.annex_config`).

    Returns:
        {"collector": str, "trust_domain": str, "idle_seconds": int, "owners": tuple[str]},
        the keyword arguments of :func:`condor_annex.pool.configs.annex_bundle` besides the
        name, token and lease end.

    Raises:
        AnnexError: the bundle is not one ``create`` made (not a tar.gz, no such file, or a
            line missing).
    """
    import io
    import tarfile
    try:
        with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as tar:
            member = tar.extractfile("config.d/50-annex.config")
            text = member.read().decode() if member else ""
    except (tarfile.TarError, KeyError, OSError, UnicodeDecodeError, EOFError):
        text = ""
    knobs = {m[1]: m[2] for m in map(_CONFIG_LINE.fullmatch, text.splitlines()) if m}
    try:
        start = knobs["START"]
        owners_m = _OWNERS_START.fullmatch(start)
        if start != "TRUE" and owners_m is None:
            raise KeyError("START")
        return {"collector": knobs["COLLECTOR_HOST"], "trust_domain": knobs["TRUST_DOMAIN"],
                "idle_seconds": int(knobs["STARTD_NOCLAIM_SHUTDOWN"]),
                "owners": tuple(o for o in (owners_m.group(1) if owners_m else "").split(",")
                                if o)}
    except (KeyError, ValueError):
        raise AnnexError("the annex's stored bundle is not one condor_annex create made (its "
                         "config.d/50-annex.config is missing a setting); nothing was "
                         "changed") from None


def extend_annex(ctx: Context, name: str, lease_seconds: int, *,
                 allow_shorten: bool = True) -> ExtendResult:
    """Move an annex's lease to ``now + lease_seconds`` (rounded up to a whole second), for
    every kind of annex (on-demand, EC2 Fleet, Spot Fleet); never changes the annex's type.

    Under the annex's lock, in this order (each step idempotent, so re-running the same
    extend finishes one that stopped part-way):

    1. the annex's IDTOKEN is minted again for the new end (plus at most 5 min of clock skew)
       and the bundle is re-rendered as ``create`` made it (collector, trust domain, idle
       time and owners read back from the stored bundle, :func:`bundle_settings`) with the
       new ``AnnexLeaseEnd``, and uploaded in place;
    2. tag ``htcondor:LeaseEnd`` is rewritten on every live instance, fleet and the launch
       template (EC2 CreateTags, in batches);
    3. the lease's schedule moves (Scheduler UpdateSchedule) last, so until it has moved the
       annex still ends at its old time.

    Fleets keep their ``ValidUntil`` (it cannot be modified): a fleet whose ``ValidUntil``
    passes before the new end stops placing and replacing instances then, but its instances
    run until the lease ends (they were launched with ``TerminateInstancesWithExpiration``
    false); :attr:`ExtendResult.fleets_stopping` lists them.

    Args:
        allow_shorten: False refuses a new end earlier than the current one (modern ``extend``
            without ``--force-lease``).

    Raises:
        UnknownAnnexError: the annex has no lease (the original created one anyway).
        LeaseWouldShortenError: the new end is earlier and ``allow_shorten`` is False.
        AnnexError: the annex's bundle is missing or unreadable (nothing changed).
        PoolError: the token could not be minted (nothing changed).
        ProviderError: a cloud call failed part-way; the bundle and tags are put back as far
            as possible and the message says the annex still ends at its old time.
    """
    outputs = ctx.setup_outputs()
    provider = ctx.provider(outputs)
    converge(ctx)
    with annex_lock(name, notify=ctx.notify):
        lease = provider.get_lease(name)
        if lease is None:
            raise unknown_annex(provider, name)
        new_end = _whole_second(utcnow() + timedelta(seconds=lease_seconds))
        if not allow_shorten and new_end < lease.expires_at - timedelta(seconds=1):
            raise LeaseWouldShortenError(name, lease.expires_at, new_end)
        old_bundle = provider.get_bundle(name)
        if old_bundle is None:
            raise AnnexError(f"annex '{name}': its bundle is missing (is it being ended?); "
                             "nothing was changed: its lease still ends it at "
                             f"{lease.expires_at:%Y-%m-%d %H:%M:%S} UTC")
        settings = bundle_settings(old_bundle)
        token = _mint_for(ctx, name, new_end)
        bundle = configs.annex_bundle(annex_name=name, token=token, **settings,
                                      lease_end=math.ceil(new_end.timestamp()))
        del token
        step = "uploading the bundle"
        try:
            provider.put_bundle(name, bundle)
            step = "tagging the instances and fleets"
            tagged = provider.set_lease_end(name, new_end)
            step = "moving the lease schedule"
            moved = provider.extend_lease(lease, new_end)
        except ProviderError as e:
            current = _lease_or_none(provider, name)
            if current is not None and current.expires_at == new_end:
                # The schedule did move (a lost reply): the extend is complete but for the
                # answer; tag again, which is idempotent.
                tagged = provider.set_lease_end(name, new_end)
                moved = current
            else:
                _put_back(provider, name, old_bundle, lease.expires_at)
                raise type(e)(
                    f"annex '{name}': extend stopped while {step} ({e}); its lease still "
                    f"ends it at {lease.expires_at:%Y-%m-%d %H:%M:%S} UTC; run the same "
                    "extend again to move it", code=e.code, retryable=e.retryable,
                    request_id=e.request_id) from e
    recording.record_lease_end(ctx.knobs, name, moved.expires_at)
    stopping = tuple((fid, until) for fid, until in tagged.fleets
                     if until is not None and until < moved.expires_at)
    return ExtendResult(name, moved.expires_at, lease.expires_at, tagged.instance_ids,
                        tuple(fid for fid, _ in tagged.fleets), stopping)


def _lease_or_none(provider: Provider, name: str) -> LeaseRef | None:
    try:
        return provider.get_lease(name)
    except ProviderError:
        return None


def _put_back(provider: Provider, name: str, bundle: bytes, end: datetime) -> None:
    """After a failed extend: the old bundle (old token, old ``AnnexLeaseEnd``) and the old
    ``htcondor:LeaseEnd`` tags, as far as the cloud lets us (best effort: the schedule, which
    did not move, ends the annex at its old time anyway)."""
    try:
        provider.put_bundle(name, bundle)
        provider.set_lease_end(name, end)
    except ProviderError as e:
        log.warning("annex %s: could not put the old bundle and tags back: %s", name, e)


def extend_lease(ctx: Context, name: str, lease_seconds: int, *,
                 allow_shorten: bool = True) -> datetime:
    """:func:`extend_annex`, returning only the new lease end (aware UTC)."""
    return extend_annex(ctx, name, lease_seconds,
                        allow_shorten=allow_shorten).lease_expires_at


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
