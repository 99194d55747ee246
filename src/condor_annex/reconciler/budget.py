"""The budget rules of the planner (issue 12 item 5), pure: no I/O and no clock.

An annex created with ``--budget USD`` (or the knob ``ANNEX_DEFAULT_BUDGET``) keeps in its spec
``budget_usd`` and ``budget_prices`` (instance type -> USD per hour, looked up at create:
:mod:`condor_annex.service.budget_check`).  Each pass, for each such annex that no live
command holds and that is not already ending:

* **spent** (USD): each instance the snapshot lists, from its ``LaunchTime`` to now while it
  runs (pending, running, stopping), or to when the store saw it end (its record's ``since``
  once terminating or terminal; else now), times the price of its type / 3600; plus, for the
  instances EC2 no longer lists (it lists ended ones for about an hour), what they cost as
  kept in the spec when they ended (``budget_ended_usd``,
  :class:`~condor_annex.reconciler.budget_actions.RecordBudgetSpend`).  EC2 bills Linux
  instances per second with a 60 s minimum ("Amazon EC2 On-Demand Pricing"), so each instance
  counts at least a minute;
* **rate** (USD per hour): the prices of its pending and running instances;
* **drain** (:class:`~condor_annex.reconciler.budget_actions.DrainForBudget`) when spent + one
  minute of the rate reaches the budget: its nodes in the pool leave it gracefully (jobs back
  to the queue), those not in it are terminated, growth stops.  That minute is the drain
  window: the annex is **ended** (:class:`~condor_annex.reconciler.actions.EndAnnex`, reason
  starting ``budget``) once none of its instances runs any more, or at the latest when spent +
  :data:`FINAL_AHEAD_S` of the rate reaches the budget (the next pass may be that far away:
  ``ANNEXD_INTERVAL`` is at most 15 s), or :data:`DRAIN_MAX_S` after the drain began;
* otherwise **stop growth** (:class:`~condor_annex.reconciler.actions.StopLaunching`, its
  reason recorded on the annex for ``status``) when spent + rate x the time left to the lease
  end exceeds the budget: a replacement would make it run out before its lease; and **lift**
  that stop (:class:`~condor_annex.reconciler.budget_actions.ResumeLaunching`) once the
  projection fits again (a budget raised with ``extend --budget``, instances ended).  A stop
  for another reason (nodes that never joined) is never lifted here.

A type missing from ``budget_prices`` (an instance the create did not foresee) counts at the
dearest price kept, never at zero; an annex with a budget but no prices kept is left alone
(the lease sweep's backstop, :mod:`condor_annex.lease.handler`, reads the same prices from the
instances' ``htcondor:Budget`` tag).

This is a small computation of its own: :mod:`condor_annex.reconciler.cost` (``status``'s live
cost) works over the cloud's listing rather than a snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from condor_annex.reconciler.actions import Action, EndAnnex, StopLaunching
from condor_annex.reconciler.budget_actions import (DRAIN_KEY, ENDED_KEY, DrainForBudget,
                                                    RecordBudgetSpend, ResumeLaunching)
from condor_annex.reconciler.snapshot import SeenInstance, Snapshot
from condor_annex.state.lifecycle import TERMINAL, Lifecycle
from condor_annex.state.records import AnnexRecord

#: EC2's minimum billed time of a Linux instance, seconds.
MINIMUM_BILLED_S = 60.0
#: How far ahead the drain rule looks, seconds: one minute of the current rate.
END_AHEAD_S = 60.0
#: How far ahead the final end looks, seconds: the longest time between two passes.
FINAL_AHEAD_S = 15.0
#: Longest drain, seconds: a drained annex is ended this long after its drain began whatever
#: the spend says (the drain window is one minute of its rate).
DRAIN_MAX_S = 90.0
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


def ended_of(spec: Mapping[str, Any]) -> dict[str, float]:
    """The spec's ``budget_ended_usd``: instance id -> what it cost (USD) when it ended."""
    found: dict[str, float] = {}
    for iid, usd in dict(spec.get(ENDED_KEY) or {}).items():
        if isinstance(usd, (int, float)) and usd >= 0:
            found[str(iid)] = float(usd)
    return found


def drain_of(spec: Mapping[str, Any]) -> dict[str, str] | None:
    """The spec's budget drain ({"at": ISO 8601, "reason": str}), or None while none began."""
    drain = spec.get(DRAIN_KEY)
    return drain if isinstance(drain, dict) and drain.get("at") else None


def tag_text(budget: float, prices: Iterable[tuple[str, float]], spent: float = 0.0) -> str:
    """Tag ``htcondor:Budget``'s value: the budget, each type's price, and (when > 0) what the
    annex's ended instances cost, space-separated (``"2.5 m5.large=0.096 spent=0.42"``; USD,
    USD per hour, USD).  The lease sweep parses it (:func:`condor_annex.lease.handler.
    over_budget`)."""
    words = [f"{budget:.10g}"] + [f"{t}={usd:.10g}" for t, usd in prices]
    if spent > 0:
        words.append(f"spent={spent:.6f}")
    return " ".join(words)


def _usd(spec: Mapping[str, Any], key: str) -> float:
    value = spec.get(key)
    return float(value) if isinstance(value, (int, float)) and value > 0 else 0.0


@dataclass(frozen=True)
class Billed:
    """One instance as the budget counts it: EC2 ``State.Name``, ``LaunchTime`` (aware UTC),
    type, and when it stopped billing (aware UTC) if it did and that is known."""

    instance_id: str
    ec2_state: str
    launch_time: datetime
    instance_type: str
    ended_at: datetime | None = None


def spend_of(instances: Iterable[Billed], prices: Mapping[str, float], now: datetime, *,
             since: datetime | None = None,
             recorded: Mapping[str, float] | None = None) -> tuple[float, float]:
    """(spent USD, rate USD per hour) of one annex's instances at ``now``.

    Args:
        instances: its instances as EC2 lists them (any state).
        prices: instance type -> USD per hour (non-empty); others count at the dearest.
        now: aware UTC.
        since: count only the time after this (aware UTC; the start of the UTC day for
            ``ANNEX_BUDGET_PER_DAY``), or None for all of it.
        recorded: instance id -> USD kept when it ended; added for instances not listed
            (with ``since`` None only: these have no dates).
    """
    dearest = max(prices.values())
    spent = rate = 0.0
    listed = set()
    for inst in instances:
        listed.add(inst.instance_id)
        price = prices.get(inst.instance_type, dearest)
        if inst.ec2_state in BILLING_STATES:
            end = now
            if inst.ec2_state != "stopping":
                rate += price
        else:
            # Ended (or stopped): when it was seen to stop billing, else now (counted high,
            # never low).
            end = min(inst.ended_at, now) if inst.ended_at is not None else now
        start = inst.launch_time if since is None else max(inst.launch_time, since)
        seconds = max((end - start).total_seconds(),
                      MINIMUM_BILLED_S if start == inst.launch_time else 0.0)
        spent += seconds * price / 3600.0
    if since is None:
        spent += sum(usd for iid, usd in (recorded or {}).items() if iid not in listed)
    return spent, rate


def billed(snap: Snapshot, name: str) -> list[Billed]:
    """The annex's instances of the snapshot, each with when the store saw it stop billing."""
    out = []
    for iid, seen in snap.instances.items():
        if seen.annex == name:
            out.append(Billed(iid, seen.ec2_state, seen.launch_time, seen.instance_type,
                              _ended_at(snap, iid, seen)))
    return out


def _ended_at(snap: Snapshot, iid: str, seen: SeenInstance) -> datetime | None:
    if seen.ec2_state in BILLING_STATES:
        return None
    rec = snap.store.instances.get(iid)
    return rec.since if rec is not None and Lifecycle(rec.state) in _ENDED else None


def spend(snap: Snapshot, name: str, prices: Mapping[str, float],
          now: datetime, since: datetime | None = None) -> tuple[float, float]:
    """(spent USD, rate USD per hour) of annex ``name`` at ``now`` (see the module docstring;
    :func:`spend_of` over the snapshot and the spec's ended instances)."""
    annex = snap.store.annexes.get(name)
    recorded = ended_of(annex.spec) if annex is not None else {}
    return spend_of(billed(snap, name), prices, now, since=since, recorded=recorded)


@dataclass
class _Verdict:
    """What the budget and the cap per day say of one annex: why it must end ("" if not),
    whether its drain window is over, why it must not grow ("" if it may)."""

    end: str = ""
    final: bool = False
    stop: str = ""


def budget_rules(snap: Snapshot, now: datetime, ending: set[str]) -> list[Action]:
    """The budget rules for every budgeted annex of the snapshot.

    Args:
        snap: the pass's snapshot.
        now: the pass's time (aware UTC).
        ending: annexes already ending this pass (left alone); the annexes this ends are
            added to it, so that later rules leave them alone too.

    Returns:
        per annex: a :class:`RecordBudgetSpend` when instances ended since the spec kept
        their cost; then a :class:`DrainForBudget` (spent + one minute of its rate reaches its
        budget or the cap per day), an :class:`EndAnnex` (drained, and its nodes left or the
        drain window is over), a :class:`StopLaunching` (projection over the budget, once) or
        a :class:`ResumeLaunching` (the projection fits again after a budget stop).
    """
    verdicts: dict[str, _Verdict] = {}
    _day_verdicts(snap, now, verdicts)
    actions: list[Action] = []
    for name, annex in sorted(snap.store.annexes.items()):
        budget, prices = budget_of(annex.spec), prices_of(annex.spec)
        if name in ending or name in snap.busy or not prices:
            continue
        v = verdicts.setdefault(name, _Verdict())
        if budget:
            actions += _record_ended(snap, name, annex, budget, prices, now)
            spent, rate = spend(snap, name, prices, now)
            why = (f"{REASON_PREFIX}: ${spent:.2f} spent of its ${budget:.2f} budget at "
                   f"${rate:.2f}/h (--budget)")
            if spent + rate * END_AHEAD_S / 3600.0 >= budget:
                v.end = v.end or why
            v.final = v.final or spent + rate * FINAL_AHEAD_S / 3600.0 >= budget
            lease_end = (snap.leases or {}).get(name, annex.lease_end)
            if lease_end is not None and not v.stop:
                left_s = max((lease_end - now).total_seconds(), 0.0)
                projected = spent + rate * left_s / 3600.0
                if projected > budget:
                    v.stop = (f"{REASON_PREFIX}: ${projected:.2f} by its lease end at "
                              f"${rate:.2f}/h would exceed its ${budget:.2f} budget; no more "
                              "instances are launched (--budget)")
        actions += _act(snap, name, annex, v, now, ending)
    return actions


def _act(snap: Snapshot, name: str, annex: AnnexRecord, v: _Verdict, now: datetime,
         ending: set[str]) -> list[Action]:
    """The actions of one annex's verdict (see :func:`budget_rules`)."""
    drain = drain_of(annex.spec)
    if drain is not None:
        running = [i for i in billed(snap, name) if i.ec2_state in BILLING_STATES]
        began = datetime.fromisoformat(drain["at"])
        overdue = (now - began).total_seconds() >= DRAIN_MAX_S
        if running and not v.final and not overdue:
            return []
        ending.add(name)
        how = ("its nodes left the pool" if not running
               else "its drain window is over; the nodes still up are terminated")
        return [EndAnnex(name, f"{drain.get('reason') or REASON_PREFIX}; ended: {how}")]
    if v.end:
        ads = snap.startd_ads
        up = sorted(i.instance_id for i in billed(snap, name)
                    if i.ec2_state in ("pending", "running"))
        in_pool = tuple(i for i in up if ads is None or ads.get(i, 0) > 0)
        others = tuple(i for i in up if i not in in_pool)
        if not up:
            ending.add(name)
            return [EndAnnex(name, f"{v.end}; ended: no node was up")]
        return [DrainForBudget(name, in_pool, others, v.end + "; its nodes leave the pool",
                               now)]
    stopped_by_budget = annex.launch_stopped.startswith(REASON_PREFIX)
    if v.stop and not annex.launch_stopped:
        return [StopLaunching(name, v.stop)]
    if not v.stop and stopped_by_budget:
        return [ResumeLaunching(name, f"{REASON_PREFIX}: its projection to the lease end fits "
                                      "its budget again")]
    return []


def _record_ended(snap: Snapshot, name: str, annex: AnnexRecord, budget: float,
                  prices: Mapping[str, float], now: datetime) -> list[Action]:
    """A :class:`RecordBudgetSpend` when an instance of the annex ended (the store dates its
    end) whose cost the spec does not keep yet."""
    kept = ended_of(annex.spec)
    new = {}
    for inst in billed(snap, name):
        if inst.ended_at is None or inst.instance_id in kept:
            continue
        new[inst.instance_id] = round(spend_of([inst], prices, now)[0], 6)
    if not new:
        return []
    ended = {**kept, **new}
    total = sum(ended.values())
    return [RecordBudgetSpend(name, tuple(sorted(ended.items())),
                              tag_text(budget, sorted(prices.items()), total),
                              f"{len(new)} instance(s) ended; ${total:.2f} spent by ended "
                              "instances")]


def _day_verdicts(snap: Snapshot, now: datetime, verdicts: dict[str, _Verdict]) -> None:
    """``ANNEX_BUDGET_PER_DAY``: the user's cap per UTC day over all of their annexes (the
    store is the user's own, so its annexes are).  The annexes whose spec keeps a
    ``budget_per_day_usd`` (the knob at their create; the smallest applies) count what they
    spent since the day began; when that + one minute of their rate reaches the cap, each is
    drained and ended as for its own budget; else, when it + their rate until the day ends (or
    their last lease end, if sooner) exceeds it, none of them grows.  Annexes ended earlier
    the same day are not counted (the snapshot holds live annexes only)."""
    capped = {name: annex for name, annex in snap.store.annexes.items()
              if _usd(annex.spec, "budget_per_day_usd") > 0 and prices_of(annex.spec)}
    if not capped:
        return
    cap = min(_usd(a.spec, "budget_per_day_usd") for a in capped.values())
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    spent = rate = 0.0
    for name, annex in capped.items():
        s, r = spend(snap, name, prices_of(annex.spec), now, since=day)
        spent, rate = spent + s, rate + r
    why = f"${spent:.2f} spent today of the ${cap:.2f} per day (ANNEX_BUDGET_PER_DAY)"
    ends = [e for e in ((snap.leases or {}).get(n, capped[n].lease_end) for n in capped) if e]
    horizon = min([day + timedelta(days=1)] + ([max(ends)] if ends else []))
    projected = spent + rate * max((horizon - now).total_seconds(), 0.0) / 3600.0
    for name in capped:
        v = verdicts.setdefault(name, _Verdict())
        if spent + rate * END_AHEAD_S / 3600.0 >= cap:
            v.end = f"{REASON_PREFIX} per day: {why} at ${rate:.2f}/h"
        v.final = spent + rate * FINAL_AHEAD_S / 3600.0 >= cap
        if projected > cap:
            v.stop = (f"{REASON_PREFIX} per day: ${projected:.2f} by {horizon:%H:%M} UTC would "
                      f"exceed the ${cap:.2f} per day (ANNEX_BUDGET_PER_DAY); no more "
                      "instances are launched")
