"""Use case status: what each annex is (instances by EC2 state, joined nodes, slots, lease end,
lifecycle), from the cloud and the collector, or from the store when annexd serves it; and every
instance of an annex by annex (:func:`annex_instances`, for ``-status -classads`` and ``logs``).
"""

from __future__ import annotations

from condor_annex.errors import PoolError
from condor_annex.model import CloudInstance
from condor_annex.pool.collector import SlotAd, annex_slots
from condor_annex.reconciler.annex_status import AnnexStatus, join_status
from condor_annex.service.common import outputs_or_none
from condor_annex.service.context import Context
from condor_annex.service.converge import converge, daemon_pid, reconcile_once
from condor_annex.service.names import unknown_annex
from condor_annex.service.status_cost import add_costs


def annex_status(ctx: Context, name: str | None = None, *,
                 with_pool: bool = True, must_exist: bool = False,
                 refresh: bool = False) -> list[AnnexStatus]:
    """Status of one annex or of all.

    When annexd serves the state file, the answer is the store's, as of the daemon's last
    pass (:attr:`AnnexStatus.as_of`; no cloud call), unless ``refresh`` runs a pass first
    (as does a ``name`` the store holds but the last pass did not see: created since).
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
    outputs = outputs_or_none(ctx)
    if outputs is not None and daemon_pid(ctx) is not None:
        if refresh or (name is not None and store_status.unseen_by_last_pass(ctx, name)):
            reconcile_once(ctx)   # asked, or created since the last pass: not "unknown"
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
    add_costs(ctx, provider, result, by_annex)
    return result


def annex_instances(ctx: Context, name: str | None = None) -> dict[str, dict[str, CloudInstance]]:
    """Every instance of one annex, or of every annex, terminated ones included, grouped by
    annex (one paginated DescribeInstances pass; ``-status -classads`` lists ids per state).

    Returns:
        annex name -> {instance id: :class:`CloudInstance`}.

    Raises:
        ProviderError: the query failed.
    """
    provider = ctx.provider(outputs_or_none(ctx))
    by_annex: dict[str, dict[str, CloudInstance]] = {}
    for iid, inst in provider.query_instances(name, include_terminated=True).items():
        by_annex.setdefault(inst.annex_name, {})[iid] = inst
    return by_annex
