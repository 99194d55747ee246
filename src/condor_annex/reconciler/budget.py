"""The budget rules of the planner (issue 12 item 5), pure: no I/O and no clock.

An annex created with ``--budget USD`` (or the knob ``ANNEX_DEFAULT_BUDGET``) keeps in its spec
``budget_usd`` and ``budget_prices`` (instance type -> USD per hour, looked up at create:
:mod:`condor_annex.service.budget_check`).  Each pass, for each such annex that no live
command holds and that is not already ending:

* **spent** (USD): each instance the snapshot lists, from its ``LaunchTime`` to now while it
  runs (pending, running, stopping), or to when the store saw it end (its record's ``since``
  once terminating or terminal; else now), times the price of its type / 3600.  EC2 bills Linux instances per second
  with a 60 s minimum ("Amazon EC2 On-Demand Pricing"), so each instance counts at least a
  minute;
* **rate** (USD per hour): the prices of its pending and running instances;
* **end** the annex (:class:`~condor_annex.reconciler.actions.EndAnnex`) when spent + one
  minute of the rate reaches the budget: the next pass may come a minute later;
* otherwise **stop growth** (:class:`~condor_annex.reconciler.actions.StopLaunching`, its
  reason recorded on the annex for ``status``) when spent + rate x the time left to the lease
  end exceeds the budget: a replacement would make it run out before its lease.

A type missing from ``budget_prices`` (an instance the create did not foresee) counts at the
dearest price kept, never at zero; an annex with a budget but no prices kept is left alone
(the lease sweep's backstop, :mod:`condor_annex.lease.handler`, reads the same prices from the
instances' ``htcondor:Budget`` tag).

This is a small computation of its own: :mod:`condor_annex.reconciler.cost` (``status``'s live
cost) works over the cloud's listing rather than a snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from condor_annex.reconciler.actions import Action, EndAnnex, StopLaunching
from condor_annex.reconciler.snapshot import Snapshot
from condor_annex.state.lifecycle import TERMINAL, Lifecycle

#: EC2's minimum billed time of a Linux instance, seconds.
MINIMUM_BILLED_S = 60.0
#: How far ahead the end rule looks, seconds: one minute of the current rate.
END_AHEAD_S = 60.0
#: EC2 states in which an instance bills (``stopping`` still runs; ``stopped`` bills volumes
#: only, left out as in :mod:`condor_annex.reconciler.cost`).
BILLING_STATES = ("pending", "running", "stopping")
#: Prefix of the reasons this module gives, so ``status`` and tests can tell them apart.
REASON_PREFIX = "budget"
#: Store states whose ``since`` is when an instance stopped billing.
_ENDED = TERMINAL | {Lifecycle.TERMINATING}


def prices_of(spec: Mapping[str, Any]) -> dict[str, float]:
    """``budget_prices`` of an annex spec as instance type -> USD per hour (finite, > 0);
    malformed entries are dropped."""
    found: dict[str, float] = {}
    for entry in spec.get("budget_prices") or ():
        try:
            itype, usd = str(entry[0]), float(entry[1])
        except (TypeError, ValueError, IndexError, KeyError):
            continue
        if usd > 0 and usd != float("inf"):
            found[itype] = usd
    return found


def budget_of(spec: Mapping[str, Any]) -> float:
    """The spec's ``budget_usd`` (USD), or 0.0 for none (absent, malformed, not > 0)."""
    return _usd(spec, "budget_usd")


def _usd(spec: Mapping[str, Any], key: str) -> float:
    value = spec.get(key)
    return float(value) if isinstance(value, (int, float)) and value > 0 else 0.0


def spend(snap: Snapshot, name: str, prices: Mapping[str, float],
          now: datetime, since: datetime | None = None) -> tuple[float, float]:
    """(spent USD, rate USD per hour) of annex ``name`` at ``now`` (see the module docstring).

    Args:
        snap: the pass's snapshot (instances listed by EC2, the store's instance records).
        name: the annex.
        prices: instance type -> USD per hour (non-empty).
        now: aware UTC.
        since: count only the time after this (aware UTC; the start of the UTC day for
            ``ANNEX_BUDGET_PER_DAY``), or None for all of it.
    """
    dearest = max(prices.values())
    spent = rate = 0.0
    for iid, seen in snap.instances.items():
        if seen.annex != name:
            continue
        price = prices.get(seen.instance_type, dearest)
        if seen.ec2_state in BILLING_STATES:
            end = now
            if seen.ec2_state != "stopping":
                rate += price
        else:
            # Ended (or stopped): when the store saw it stop billing, else now (it stopped
            # since the last pass, or the store never knew it: counted high, never low).
            rec = snap.store.instances.get(iid)
            stopped = rec is not None and Lifecycle(rec.state) in _ENDED
            end = min(rec.since, now) if rec is not None and stopped else now
        start = seen.launch_time if since is None else max(seen.launch_time, since)
        seconds = max((end - start).total_seconds(),
                      MINIMUM_BILLED_S if start == seen.launch_time else 0.0)
        spent += seconds * price / 3600.0
    return spent, rate


def budget_rules(snap: Snapshot, now: datetime, ending: set[str]) -> list[Action]:
    """The budget rules for every budgeted annex of the snapshot.

    Args:
        snap: the pass's snapshot.
        now: the pass's time (aware UTC).
        ending: annexes already ending this pass (left alone); the annexes this ends are
            added to it, so that later rules leave them alone too.

    Returns:
        an :class:`EndAnnex` for each annex whose spent + one minute of its rate reaches its
        budget, else a :class:`StopLaunching` for each whose projection to its lease end
        exceeds it (once: not when launching already stopped).
    """
    actions: list[Action] = day_rules(snap, now, ending)
    for name, annex in sorted(snap.store.annexes.items()):
        budget, prices = budget_of(annex.spec), prices_of(annex.spec)
        if not budget or not prices or name in ending or name in snap.busy:
            continue
        spent, rate = spend(snap, name, prices, now)
        if spent + rate * END_AHEAD_S / 3600.0 >= budget:
            ending.add(name)
            actions.append(EndAnnex(name, f"{REASON_PREFIX}: ${spent:.2f} spent of its "
                                          f"${budget:.2f} budget at ${rate:.2f}/h (--budget)"))
            continue
        lease_end = (snap.leases or {}).get(name, annex.lease_end)
        if annex.launch_stopped or lease_end is None:
            continue
        left_s = max((lease_end - now).total_seconds(), 0.0)
        projected = spent + rate * left_s / 3600.0
        if projected > budget:
            actions.append(StopLaunching(
                name, f"{REASON_PREFIX}: ${projected:.2f} by its lease end at ${rate:.2f}/h "
                      f"would exceed its ${budget:.2f} budget; no more instances are "
                      "launched (--budget)"))
    return actions


def day_rules(snap: Snapshot, now: datetime, ending: set[str]) -> list[Action]:
    """``ANNEX_BUDGET_PER_DAY``: the user's cap per UTC day over all of their annexes (the
    store is the user's own, so its annexes are).  The annexes whose spec keeps a
    ``budget_per_day_usd`` (the knob at their create; the smallest applies) count what they
    spent since the day began; when that + one minute of their rate reaches the cap, each is
    ended; else, when it + their rate until the day ends (or their last lease end, if sooner)
    exceeds it, each stops growing.  Annexes ended earlier the same day are not counted (the
    snapshot holds live annexes only).  ``ending`` is extended as in :func:`budget_rules`."""
    capped = {name: annex for name, annex in snap.store.annexes.items()
              if _usd(annex.spec, "budget_per_day_usd") > 0 and prices_of(annex.spec)}
    if not capped:
        return []
    cap = min(_usd(a.spec, "budget_per_day_usd") for a in capped.values())
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    spent = rate = 0.0
    for name, annex in capped.items():
        s, r = spend(snap, name, prices_of(annex.spec), now, since=day)
        spent, rate = spent + s, rate + r
    movable = sorted(n for n in capped if n not in ending and n not in snap.busy)
    actions: list[Action] = []
    why = f"${spent:.2f} spent today of the ${cap:.2f} per day (ANNEX_BUDGET_PER_DAY)"
    if spent + rate * END_AHEAD_S / 3600.0 >= cap:
        for name in movable:
            ending.add(name)
            actions.append(EndAnnex(name, f"{REASON_PREFIX} per day: {why} at ${rate:.2f}/h"))
        return actions
    ends = [e for e in ((snap.leases or {}).get(n, capped[n].lease_end) for n in capped) if e]
    horizon = min([day + timedelta(days=1)] + ([max(ends)] if ends else []))
    projected = spent + rate * max((horizon - now).total_seconds(), 0.0) / 3600.0
    if projected > cap:
        actions += [StopLaunching(n, f"{REASON_PREFIX} per day: ${projected:.2f} by "
                                     f"{horizon:%H:%M} UTC would exceed the ${cap:.2f} per day "
                                     "(ANNEX_BUDGET_PER_DAY); no more instances are launched")
                    for n in movable if not capped[n].launch_stopped]
    return actions
