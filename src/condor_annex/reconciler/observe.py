"""The observe step of a reconciler pass: read the cloud, the pool and the store into one
:class:`~condor_annex.reconciler.snapshot.Snapshot`.

Cloud reads per pass, whatever the number of annexes: one paginated DescribeInstances for
every instance with our annex tag (terminated ones included, so ends are seen), one
ListSchedules plus a GetSchedule per lease; one collector query for every annex's startd ads.
A read that fails leaves its part of the snapshot ``None`` and the planner skips the rules
that need it: a pass never acts on a guess.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from condor_annex.errors import AnnexError, PoolError, ProviderError
from condor_annex.model import CloudInstance
from condor_annex.pool.collector import SlotAd, annex_slots
from condor_annex.pool.demand import annex_demand
from condor_annex.providers.base import Provider
from condor_annex.reconciler.snapshot import SeenInstance, Snapshot, StoreView
from condor_annex.state.locks import annex_busy
from condor_annex.state.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Observed:
    """What :func:`observe` read.

    Attributes:
        snapshot: the planner's input.
        cloud: every instance with our annex tag, as the provider returned it.
        slots: every annex startd (slot) ad, or None when the collector was not read.
        errors: one line per read that failed this pass (for the daemon's ad and log).
    """

    snapshot: Snapshot
    cloud: dict[str, CloudInstance]
    slots: list[SlotAd] | None
    errors: tuple[str, ...] = ()


def store_view(store: Store) -> StoreView:
    """The store's rows the planner reads: live annexes, their launch requests, instances and
    join outcomes."""
    annexes = {a.name: a for a in store.annexes()}
    return StoreView(
        annexes=annexes,
        launch_requests=tuple(r for r in store.launch_requests() if r.annex in annexes),
        instances={i.instance_id: i for i in store.instances() if i.annex in annexes},
        join_outcomes=store.join_outcomes(),
        interrupted=frozenset(store.interrupted()),
        autoscale=store.autoscale())


def observe(provider: Provider, store: Store, collector: str | None) -> Observed:
    """Read one pass's snapshot.

    Args:
        provider: the cloud (only read here).
        store: the state store (only read here).
        collector: the pool's collector (``host:port``), or None/"" to skip the pool (no
            instance is then judged by its startd ads).

    Raises:
        ProviderError: DescribeInstances failed (nothing can be planned without it).
    """
    errors: list[str] = []
    view = store_view(store)
    cloud = provider.query_instances(include_terminated=True)
    seen = {iid: SeenInstance(iid, i.annex_name, i.state, _launched(i), i.launch_token,
                              i.lease_end, i.instance_type, i.state_reason)
            for iid, i in cloud.items()}
    leases: dict[str, datetime] | None
    try:
        leases = {lease.annex_name: lease.expires_at for lease in provider.list_leases()}
    except (ProviderError, AnnexError) as e:
        errors.append(f"leases not read: {e}")
        leases = None
    slots: list[SlotAd] | None = None
    ads: dict[str, int] | None = None
    worked: frozenset[str] | None = None
    interrupting: frozenset[str] = frozenset()
    if collector:
        try:
            slots = annex_slots(collector)
            ads = dict(Counter(s.instance_id for s in slots if s.instance_id))
            worked = frozenset(s.instance_id for s in slots if s.instance_id and s.worked)
            interrupting = frozenset(s.instance_id for s in slots
                                     if s.instance_id and s.interruption)
        except PoolError as e:
            errors.append(f"collector not read: {e}")
    busy = frozenset(name for name in view.annexes if annex_busy(name))
    demand, holding = _demand(collector, view, slots, errors)
    free = None if slots is None else _free_cpus(slots, cloud)
    snap = Snapshot(instances=seen, startd_ads=ads, leases=leases, store=view, busy=busy,
                    worked=worked, interrupting=interrupting, demand=demand,
                    demand_holding=holding, free_cpus=free)
    return Observed(snap, cloud, slots, tuple(errors))


def _demand(collector: str | None, view: StoreView, slots: list[SlotAd] | None,
            errors: list[str]) -> tuple[dict[str, int] | None, str]:
    """Idle jobs per autoscaled annex (issue 13; one query per schedd), or (None, why) when
    they cannot all be counted: the autoscale rule then holds those annexes' size."""
    if not view.autoscale:
        return None, ""
    if not collector or slots is None:
        return None, "the collector did not answer"
    try:
        seen = annex_demand(collector, {n: r.template for n, r in view.autoscale.items()})
    except PoolError as e:
        errors.append(f"demand not read: {e}")
        return None, "the collector did not list the schedds"
    if seen.partial:
        return None, ", ".join(f"schedd {n}" for n in seen.unanswered) + " did not answer"
    return dict(seen.counts), ""


def _free_cpus(slots: list[SlotAd], cloud: dict[str, CloudInstance]) -> dict[str, int]:
    """Cores of each annex's unclaimed slots on pending or running instances (a stale ad of
    an ended node is not capacity)."""
    free: dict[str, int] = {}
    for s in slots:
        inst = cloud.get(s.instance_id)
        if s.state == "Unclaimed" and inst is not None and inst.state in ("pending", "running"):
            free[s.annex_name] = free.get(s.annex_name, 0) + s.cpus
    return free


def _launched(inst: CloudInstance) -> datetime:
    """The instance's launch time; EC2 always gives one, so its absence is a provider bug."""
    if inst.launch_time is None:
        raise ProviderError(f"instance {inst.instance_id}: DescribeInstances gave no "
                            "LaunchTime", code="MissingLaunchTime")
    return inst.launch_time
