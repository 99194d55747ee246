"""The autoscale rule of the planner (issue 13), pure: no I/O and no clock.

For each demand-driven annex (``create NAME --autoscale --max N [--min M]``) that is live, not
ending and not held by a command, one :class:`~condor_annex.reconciler.autoscale_action.
SetAutoscale` per pass records the decision:

* **demand**: idle jobs that target the annex and match a slot of its type
  (:mod:`condor_annex.pool.demand`); **capacity**: what is idle or booting — the cores of the
  annex's unclaimed slots in the collector plus every core of its instances that have no
  startd ad yet (requested or allocated).  A job is counted as one core's worth;
* **hold** when demand or capacity is not known this pass (a schedd or the collector did not
  answer): never grow or shrink on a partial view;
* **up to --min** at once (those instances get no idle shutdown);
* **grow** when demand has stayed above capacity for the settle time (``ANNEX_AUTOSCALE_SETTLE``,
  30 s; the time it was first seen above is kept in the store, so a restart does not forget
  it): by ``ceil((demand - capacity) / cores per node)`` instances, never beyond ``--max``,
  never within :data:`MIN_LEASE_LEFT_S` of the lease end, never when launching stopped (budget
  projection, protected mode) and never beyond what the annex's budget allows to its lease end.
  A growth starts a new settle period (what was launched is booting capacity by the next pass);
* **never shrink**: nodes above ``--min`` leave through their own idle timeout
  (``STARTD_NOCLAIM_SHUTDOWN``); this rule never terminates anything, so a claimed slot is never
  ended to shrink.

The rule decides; condor_annexd launches after its pass (:mod:`condor_annex.service.
autoscale_launch`), through the path replacements use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime

from condor_annex.reconciler.actions import Action, StopLaunching
from condor_annex.reconciler.autoscale_action import SetAutoscale
from condor_annex.reconciler.budget import budget_of, prices_of, spend
from condor_annex.reconciler.snapshot import Snapshot
from condor_annex.state.autoscale_record import AutoscaleRecord
from condor_annex.state.lifecycle import Lifecycle

L = Lifecycle

#: Default settle time, seconds (``ANNEX_AUTOSCALE_SETTLE``): demand must stay above capacity
#: this long before the annex grows, so a burst of jobs that finish in seconds buys nothing.
DEFAULT_SETTLE_S = 30.0
#: Seconds of lease an annex must have left to grow (as for replacements): a node needs minutes
#: to boot and join, and bills at least one.
MIN_LEASE_LEFT_S = 600.0
#: Lifecycle states of an instance that is (or will be) part of the annex.
LIVE = frozenset({L.REQUESTED, L.ALLOCATED, L.JOINED, L.DRAINING})
#: Of those, the ones still booting (no startd ad yet): all their cores are capacity.
BOOTING = frozenset({L.REQUESTED, L.ALLOCATED})


def autoscale_rules(snap: Snapshot, now: datetime, state: Mapping[str, Lifecycle],
                    ending: set[str], earlier: Sequence[Action],
                    settle_s: float = DEFAULT_SETTLE_S) -> list[Action]:
    """The autoscale decisions of one pass.

    Args:
        snap: the pass's snapshot (``store.autoscale``, ``demand``, ``free_cpus``).
        now: the pass's time (aware UTC).
        state: instance id -> lifecycle state after the pass's earlier rules.
        ending: annexes ending this pass (left alone).
        earlier: the pass's actions so far (a budget :class:`StopLaunching` this pass stops
            growth at once).
        settle_s: the settle time, seconds.

    Returns:
        one :class:`SetAutoscale` per autoscaled annex decided on.
    """
    stopped = {a.annex: a.reason for a in earlier if isinstance(a, StopLaunching)}
    out: list[Action] = []
    for name, rec in sorted(snap.store.autoscale.items()):
        annex = snap.store.annexes.get(name)
        if annex is None or name in ending or name in snap.busy \
                or annex.off_requested_at is not None:
            continue
        live = [iid for iid, r in snap.store.instances.items()
                if r.annex == name and state.get(iid) in LIVE]
        booting = sum(1 for iid in live if state.get(iid) in BOOTING)
        out.append(_decide(snap, now, rec, len(live), booting,
                           stopped.get(name) or annex.launch_stopped, settle_s))
    return out


def _decide(snap: Snapshot, now: datetime, rec: AutoscaleRecord, live: int, booting: int,
            stopped: str, settle_s: float) -> SetAutoscale:
    """One annex's decision (see the module docstring)."""
    name = rec.annex

    def hold(why: str, demand: int | None = None,
             above: datetime | None = rec.above_since) -> SetAutoscale:
        return SetAutoscale(name, above, demand, live, 0, 0, why)

    if snap.demand is None or snap.free_cpus is None:
        # Partial view: the first-seen time is neither confirmed nor cleared.
        return hold(f"holding: {snap.demand_holding or 'the collector did not answer'}")
    cores = max(int(rec.template.get("Cpus") or 1), 1)
    demand = int(snap.demand.get(name, 0))
    capacity = int(snap.free_cpus.get(name, 0)) + booting * cores
    growth_block = _growth_block(snap, now, name, stopped)
    if live < rec.min_count:
        if growth_block:
            return hold(f"below --min {rec.min_count}: {growth_block}", demand)
        n = _within_budget(snap, now, name, rec.min_count - live)
        if n == 0:
            return hold("holding: the budget allows no more instances to the lease end",
                        demand)
        return SetAutoscale(name, None, demand, live + n, n, n,
                            f"below --min {rec.min_count}: launching {n}")
    if demand <= capacity:
        return SetAutoscale(name, None, demand, live, 0, 0,
                            f"demand {demand} <= capacity {capacity}: idle nodes above --min "
                            f"{rec.min_count} leave by their idle timeout")
    above = rec.above_since or now
    seen = f"demand {demand} > capacity {capacity} for {(now - above).total_seconds():.0f} s"
    if live >= rec.max_count:
        return SetAutoscale(name, above, demand, live, 0, 0, f"{seen}: at max ({rec.max_count})")
    if (now - above).total_seconds() < settle_s:
        return SetAutoscale(name, above, demand, live, 0, 0,
                            f"{seen}: waiting for the settle time ({settle_s:.0f} s)")
    if growth_block:
        return hold(f"{seen}: {growth_block}", demand, above)
    wanted = math.ceil((demand - capacity) / cores)
    target = min(rec.max_count, live + wanted)
    n = _within_budget(snap, now, name, target - live)
    if n == 0:
        return hold(f"{seen}: holding: the budget allows no more instances to the lease end",
                    demand, above)
    why = f"{seen}: growing to {live + n}" + (" (max)" if live + n == rec.max_count else "")
    # A new settle period starts: what is launched is booting capacity from the next pass.
    return SetAutoscale(name, now, demand, live + n, n, 0, why)


def _growth_block(snap: Snapshot, now: datetime, name: str, stopped: str) -> str:
    """Why the annex may not grow now ("" when it may): launching stopped, or its lease
    ends too soon (or is not known)."""
    if stopped:
        return f"growth stopped: {stopped}"
    annex = snap.store.annexes[name]
    end = (snap.leases or {}).get(name, annex.lease_end)
    if end is None:
        return "holding: its lease end is not known"
    left = (end - now).total_seconds()
    if left < MIN_LEASE_LEFT_S:
        return f"holding: its lease ends in {max(left, 0):.0f} s"
    return ""


def _within_budget(snap: Snapshot, now: datetime, name: str, n: int) -> int:
    """At most ``n``: as many more instances as the annex's budget pays for until its lease
    end (the projection :mod:`condor_annex.reconciler.budget` stops growth on), all of ``n``
    for an annex without a budget."""
    annex = snap.store.annexes[name]
    budget, prices = budget_of(annex.spec), prices_of(annex.spec)
    end = (snap.leases or {}).get(name, annex.lease_end)
    if not budget or not prices or end is None or n <= 0:
        return max(n, 0)
    spent, rate = spend(snap, name, prices, now)
    hours = max((end - now).total_seconds(), 0.0) / 3600.0
    price = prices.get(str(annex.spec.get("instance_type", "")), max(prices.values()))
    room = budget - spent - rate * hours
    if hours <= 0:
        return n
    return max(0, min(n, math.floor(room / (price * hours))))
