"""Use case create: a new annex, or more instances in one (on-demand, EC2 Fleet, Spot Fleet).

Ordering fixes the original tool's defects (reference §3, §7, §10) so that a kill -9 at any
moment leaves nothing that nothing will end: ``create`` makes the lease first, then uploads the
bundle, then launches in bulk with client token ``<annex>_<uuid>`` (also a tag on all it makes);
a failure ends only what carries that token (:mod:`condor_annex.service.rollback`).  It holds
the annex's lock (:mod:`condor_annex.state.locks`).  What it refuses before any of that:
:mod:`condor_annex.service.create_checks`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from condor_annex.errors import AnnexError, LeaseWouldShortenError, ProviderError
from condor_annex.model import (SPOT_API_SPOT_FLEET, AnnexSpec, FleetRequest, LaunchRequest,
                                SetupOutputs, SpotSpec, new_client_token, utcnow)
from condor_annex.pool import configs
from condor_annex.providers.base import Provider
from condor_annex.service import admin_access, create_prices, recording
from condor_annex.service.budget_check import budget_tag, with_budget
from condor_annex.service.common import mint_for, whole_second
from condor_annex.service.context import Context
from condor_annex.service.converge import converge
from condor_annex.service.create_checks import check_spot, check_subnets
from condor_annex.service.rollback import roll_back
from condor_annex.state.locks import annex_lock
from condor_annex.state.store import open_store

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class _Launched:
    """What a launch step reports: its client token, instance ids, fleet id or ""."""

    client_token: str
    instance_ids: tuple[str, ...]
    fleet_id: str = ""


#: A launch step: (setup outputs, provider, lease end, client token) -> what it launched.
_LaunchStep = Callable[[SetupOutputs, Provider, datetime, str], _Launched]


def _create(ctx: Context, spec: AnnexSpec, launch: _LaunchStep,
            kind: str = "on-demand", price_types: tuple[str, ...] = (),
            autoscale: tuple[int, int, dict] | None = None) -> CreateResult:
    """The steps every create shares, ordered so that a kill -9 at any moment leaves nothing
    that nothing will end (issue 8):

    1. under the annex's lock (:mod:`condor_annex.state.locks`), look at the annex: a new
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
       what carries that token (:func:`~condor_annex.service.rollback.roll_back`), and deletes bundle, role and lease only of
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
        wanted_end = whole_second(utcnow() + timedelta(seconds=spec.lease_seconds))
        end = wanted_end
        if lease is not None:
            if spec.lease_explicit and wanted_end < lease.expires_at - timedelta(seconds=1):
                raise LeaseWouldShortenError(spec.name, lease.expires_at, wanted_end)
            end = max(lease.expires_at, wanted_end) if spec.lease_explicit \
                else lease.expires_at
        client_token = new_client_token(spec.name)
        # Token and bundle are made locally first: a pool that refuses to mint stops the
        # create before anything is recorded or made.
        token = mint_for(ctx, spec.name, end)
        admin = admin_access.bundle_extras(ctx, provider, spec, adding)   # key, --config-dir
        bundle = configs.annex_bundle(annex_name=spec.name, collector=collector,
                                      trust_domain=ctx.trust_domain,
                                      idle_seconds=spec.idle_seconds, token=token,
                                      owners=spec.owners, lease_end=math.ceil(end.timestamp()),
                                      **admin)
        del token
        # The store before the cloud (issue 11): if it cannot be written, nothing is made.
        # The prices of the launch, kept so that status counts the spend at them (issue 12).
        kept = create_prices.prices_to_keep(
            provider, list(price_types), "on-demand" if kind == "on-demand" else "spot")
        recording.record_create(ctx.knobs, spec, kind=kind, lease_end=end,
                                client_token=client_token, launch_prices=kept)
        if autoscale is not None:   # issue 13: (min, max, slot template), before the cloud
            with open_store(ctx.knobs) as store:
                store.put_autoscale(spec.name, *autoscale)
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
            roll_back(ctx, provider, spec.name, client_token, error=e,
                       new_annex=not adding and created_lease, lease=lease, bundle=ref)
            recording.record_outcome(ctx.knobs, spec.name, client_token, "failed")
            if removed:
                raise _lease_removed(spec.name) from e
            raise
        recording.record_outcome(ctx.knobs, spec.name, client_token, "launched",
                                 launched.instance_ids)
        if provider.get_lease(spec.name) is None:
            roll_back(ctx, provider, spec.name, client_token, error=None, new_annex=False,
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
        admin_access.install_token(ctx, spec.name, admin)   # the owner's admin tools
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
                config_bucket=outputs.bucket, lease_end=lease_end, subnet_ids=subnet_ids,
                budget=budget_tag(spec))


def create_annex(ctx: Context, spec: AnnexSpec, *,
                 autoscale: tuple[int, int, dict] | None = None,
                 keep_idle: bool = False) -> CreateResult:
    """Create an annex, or add instances to one: lease -> bundle -> one bulk launch (EC2
    RunInstances); see :func:`_create` for the order and what a failure undoes.

    Args:
        ctx: settings.
        spec: a validated request (name, count, lease/idle seconds, ...); a count of 0
            (an autoscaled annex's ``--min 0``) makes lease, bundle and role and launches
            nothing.
        autoscale: (min, max, slot template) of a demand-driven annex (issue 13,
            :mod:`condor_annex.service.autoscale_create`), recorded before the cloud.
        keep_idle: the instances get no idle shutdown (an autoscaled annex's ``--min``
            nodes): tag ``htcondor:IdleShutdown = off``, read by the agent at boot.

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
    spec = with_budget(ctx, spec)   # prices asked for, nothing made (issue 12 item 5)
    chosen = launch_image(ctx, spec, recorded, instance_type=spec.instance_type)
    image_id = chosen.image.image_id

    def launch(outputs: SetupOutputs, provider: Provider, lease_end: datetime,
               client_token: str) -> _Launched:
        if spec.count == 0:
            return _Launched(client_token, ())   # an autoscaled annex from zero
        request = LaunchRequest(count=spec.count, instance_type=spec.instance_type,
                                image_id=image_id, idle_shutdown=not keep_idle,
                                **_instance_fields(spec, outputs, client_token, lease_end,
                                                   subnets, chosen.user_data))
        result = provider.launch(request, notify=ctx.notify)
        return _Launched(result.client_token, result.instance_ids)

    return _create(ctx, spec, launch, price_types=(spec.instance_type,), autoscale=autoscale)


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
    spec = with_budget(ctx, spec, spot)   # prices asked for, nothing made (issue 12 item 5)
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

    created = _create(ctx, spec, launch, kind=spot.api, price_types=tuple(
        t for t, _w in create_prices.instance_types(spec, spot)))
    # What a replacement of interrupted capacity needs (service/replace.py); no secrets.
    recording.record_spot(ctx.knobs, spec.name, spot)
    return created