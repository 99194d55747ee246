"""``ANNEX_BUDGET_PER_DAY`` (issue 12 item 5) through the planner: the user's cap per UTC day
over all of their annexes, on synthetic snapshots."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from condor_annex.reconciler.actions import EndAnnex, StopLaunching
from condor_annex.reconciler.budget_actions import DrainForBudget
from condor_annex.reconciler.plan import plan
from condor_annex.reconciler.snapshot import SeenInstance, Snapshot, StoreView
from condor_annex.state.records import AnnexRecord

#: 00:30 UTC: the day began 30 minutes ago.
NOW = datetime(2026, 3, 1, 0, 30, tzinfo=timezone.utc)
PRICE = 0.60   # one cent a minute


def annex(name, per_day, *, lease_left_min=60, stopped="", budget=0.0) -> AnnexRecord:
    spec = {"budget_per_day_usd": per_day, "budget_usd": budget,
            "budget_prices": [["m5.large", PRICE]]}
    return AnnexRecord(name, spec, 1, NOW + timedelta(minutes=lease_left_min),
                       NOW - timedelta(hours=2), launch_stopped=stopped)


def inst(iid, annex, minutes) -> SeenInstance:
    return SeenInstance(iid, annex, "running", NOW - timedelta(minutes=minutes), "",
                        instance_type="m5.large")


def snap(annexes, instances, busy=()) -> Snapshot:
    return Snapshot(instances={i.instance_id: i for i in instances}, startd_ads={},
                    store=StoreView(annexes={a.name: a for a in annexes}),
                    busy=frozenset(busy))


def of(actions, kind):
    return sorted(a.annex for a in actions if isinstance(a, kind))


def test_two_annexes_together_reaching_the_days_cap_are_both_drained():
    # Launched 2 h ago, but only today's 30 min count: 2 x $0.30, + 2 cents = $0.62.
    s = snap([annex("a", 0.62), annex("b", 0.62)], [inst("i-1", "a", 120), inst("i-2", "b", 30)])
    actions = plan(s, NOW)
    assert of(actions, DrainForBudget) == ["a", "b"]
    assert all("ANNEX_BUDGET_PER_DAY" in a.reason for a in actions)


def test_below_the_cap_but_not_for_the_rest_of_the_lease_growth_stops():
    # $0.60 + 2 cents < $0.63; by the lease end (60 min) 0.60 + 1.20 = $1.80 > $0.63.
    s = snap([annex("a", 0.63), annex("b", 0.63)], [inst("i-1", "a", 30), inst("i-2", "b", 30)])
    actions = plan(s, NOW)
    assert of(actions, DrainForBudget) == [] and of(actions, StopLaunching) == ["a", "b"]


def test_within_the_cap_nothing_happens():
    s = snap([annex("a", 5.0)], [inst("i-1", "a", 30)])
    assert plan(s, NOW) == []


def test_annexes_created_without_the_knob_are_not_counted_or_ended():
    s = snap([annex("a", 0.31), annex("free", 0.0)],
             [inst("i-1", "a", 30), inst("i-2", "free", 30)])
    actions = plan(s, NOW)
    assert of(actions, DrainForBudget) == ["a"]


def test_the_smallest_cap_kept_applies():
    # b has no node up: nothing to drain, it is ended at once.
    s = snap([annex("a", 100.0), annex("b", 0.1)], [inst("i-1", "a", 30)])
    actions = plan(s, NOW)
    assert of(actions, DrainForBudget) == ["a"] and of(actions, EndAnnex) == ["b"]


def test_a_busy_annex_is_left_to_its_command_but_its_spend_counts():
    s = snap([annex("a", 0.62), annex("b", 0.62)],
             [inst("i-1", "a", 30), inst("i-2", "b", 30)], busy=["b"])
    assert of(plan(s, NOW), DrainForBudget) == ["a"]
