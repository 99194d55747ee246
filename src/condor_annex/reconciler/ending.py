"""Ending what an annex, or one of its launch requests, made: written once, used by ``off``
(:func:`condor_annex.service.annex.end_annex`), by a failed create's rollback, and by the
reconciler's :class:`~condor_annex.reconciler.actions.EndAnnex` and
:class:`~condor_annex.reconciler.actions.RollBackLaunch`.

The order is the one that keeps a kill -9 harmless (issue 8): fleets first (CancelSpotFleet-
Requests / DeleteFleets, so nothing replaces what is terminated), then the instances still
alive (TerminateInstances), then the bundle (its token is a live credential) and the owner's
administrator token for the annex's nodes (:mod:`condor_annex.pool.annex_admin`), then the annex's
own instance profile and role, and the lease last: whatever a crash leaves still has the
lease that ends it.  Every step is idempotent, so running it again finishes an ending that
stopped part-way.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from condor_annex.model import BundleRef, FleetsEnded, LeaseRef, bundle_key
from condor_annex.pool import annex_admin
from condor_annex.providers.base import Provider

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ended:
    """What :func:`end_annex_resources` ended.

    Attributes:
        terminated: instance ids sent to TerminateInstances.
        fleets: fleets cancelled or deleted, and launch templates deleted.
        bundle_deleted / role_deleted / lease_deleted: whether each existed and was deleted.
    """

    terminated: tuple[str, ...]
    fleets: FleetsEnded
    bundle_deleted: bool
    role_deleted: bool
    lease_deleted: bool

    @property
    def found(self) -> bool:
        """True when anything of the annex existed."""
        f = self.fleets
        return bool(self.terminated or f.spot_fleet_requests or f.fleets or f.launch_templates
                    or self.bundle_deleted or self.role_deleted or self.lease_deleted)


def end_members(provider: Provider, name: str, alive: Sequence[str]) -> tuple[FleetsEnded,
                                                                              tuple[str, ...]]:
    """Cancel the annex's fleets (terminating their members), then terminate those of
    ``alive`` still alive.

    Returns:
        (what ending the fleets did, the ids sent to TerminateInstances).

    Raises:
        ProviderError: a call failed.
    """
    fleets = provider.end_fleets(name)
    left = list(alive)
    if left and (fleets.spot_fleet_requests or fleets.fleets):
        # Ending a fleet terminated its members; terminate only what is still alive.
        still = {iid for iid, i in provider.query_instances(name).items() if i.alive}
        left = [iid for iid in left if iid in still]
    if left:
        provider.terminate(left)
    return fleets, tuple(left)


def end_annex_resources(provider: Provider, name: str, bucket: str, *,
                        alive: Sequence[str] | None = None,
                        lease: LeaseRef | None | bool = True,
                        has_bundle: bool | None = None,
                        token_knobs: dict[str, str] | None = None) -> Ended:
    """End everything of annex ``name``, in the order of the module docstring.

    Args:
        provider: the cloud.
        name: the annex.
        bucket: setup's bucket (where the bundle is).
        alive: live instance ids already listed by the caller (``off`` lists them before its
            graceful leave), or None to list them here (one DescribeInstances).
        lease: the annex's lease as the caller read it, None when it has none, or True to
            read it here (Scheduler GetSchedule).
        has_bundle: whether the bundle exists as the caller saw it, or None to ask here.
        token_knobs: the user's knobs, where the owner's administrator token for the annex
            is (:func:`condor_annex.pool.annex_admin.remove_admin_token`); None reads them.

    Returns:
        :class:`Ended`.

    Raises:
        ProviderError: a call failed; what was ended stays ended, and running this again
            finishes the rest (the lease, deleted last, still ends what is left).
    """
    if alive is None:
        alive = [iid for iid, i in provider.query_instances(name).items() if i.alive]
    if lease is True:
        lease = provider.get_lease(name)
    if has_bundle is None:
        has_bundle = provider.bundle_exists(name)
    fleets, terminated = end_members(provider, name, alive)
    if has_bundle:
        provider.delete_bundle(BundleRef(bucket, bundle_key(name)))
    # The owner's administrator token for the annex's nodes (never raises).
    annex_admin.remove_admin_token(name, token_knobs)
    role_deleted = provider.delete_annex_role(name)
    if isinstance(lease, LeaseRef):
        provider.delete_lease(lease)
    return Ended(tuple(alive), fleets, bool(has_bundle), role_deleted,
                 isinstance(lease, LeaseRef))


def end_launch_request(provider: Provider, name: str, client_token: str, *, wait_s: float,
                       notify: Callable[[str], None] | None = None) -> list[str]:
    """End the fleets and instances tagged with ``client_token`` (never the rest of the annex),
    looking again for ``wait_s`` seconds (jittered, 0.5-3 s apart) for what EC2's listings do
    not show yet (a launch whose reply was lost, or a command killed during its call).

    Returns:
        ids of what was ended (fleets, launch templates, instances).

    Raises:
        ProviderError: a call failed.
    """
    ended: list[str] = []
    deadline = time.monotonic() + wait_s
    if wait_s and notify:
        notify(f"annex {name}: looking for up to {wait_s:.0f} s for anything launch "
               f"{client_token} started (EC2's listings lag) to end it")
    while True:
        fleets = provider.end_fleets(name, launch_token=client_token)
        alive = [iid for iid, i in provider.query_instances(
            name, launch_token=client_token).items() if i.alive]
        if alive:
            provider.terminate(alive)
        ended += list(fleets.spot_fleet_requests + fleets.fleets + fleets.launch_templates)
        ended += [iid for iid in alive if iid not in ended]
        left = deadline - time.monotonic()
        if left <= 0:
            return ended
        time.sleep(min(left, random.uniform(0.5, 3.0)))
