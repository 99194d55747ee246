"""Use case off: end an annex completely.  Nodes in the pool are first asked to leave it
gracefully and given a grace period; then its fleets, instances, launch template, bundle, role
and lease are ended, in that order (:func:`condor_annex.reconciler.ending.end_annex_resources`).
It holds the annex's lock (:mod:`condor_annex.state.locks`) and records the off in the store
first, so a pass finishes an off killed part-way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from condor_annex.errors import PoolError, ProviderError
from condor_annex.model import DEFAULT_OFF_GRACE_SECONDS, utcnow
from condor_annex.pool.collector import annex_slots
from condor_annex.providers.base import Provider
from condor_annex.reconciler import ending
from condor_annex.service import recording
from condor_annex.service.context import Context
from condor_annex.service.converge import converge
from condor_annex.service.names import unknown_annex
from condor_annex.state.locks import annex_lock

log = logging.getLogger(__name__)


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
    # An annex the store knows may be ended by this pass itself (an off that died part-way, a
    # lease that passed): this off then has nothing left to do, and says so without an error.
    finishing = recording.annex_live(ctx.knobs, name)
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
                                           lease=lease, has_bundle=has_bundle,
                                           token_knobs=ctx.knobs)
        if not ended.found and not finishing:
            recording.record_ended(ctx.knobs, name)
            raise unknown_annex(provider, name)
        recording.record_ended(ctx.knobs, name)
        fleets = ended.fleets
    return EndResult(name, tuple(alive), ended.lease_deleted, ended.bundle_deleted,
                     fleets.spot_fleet_requests, fleets.fleets, fleets.launch_templates, left,
                     ended.role_deleted)


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
