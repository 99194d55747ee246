"""The budget rules (issue 12 item 5) through the planner, on synthetic snapshots: when a
budgeted annex stops growing, when it is ended, and what it is never ended for."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from condor_annex.reconciler.actions import EndAnnex, StopLaunching
from condor_annex.reconciler.budget import budget_rules, spend
from condor_annex.reconciler.budget_actions import DrainForBudget
from condor_annex.reconciler.plan import plan
from condor_annex.reconciler.snapshot import SeenInstance, Snapshot, StoreView
from condor_annex.state.lifecycle import Lifecycle as L
from condor_annex.state.records import AnnexRecord, InstanceRecord

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
#: $0.60 an hour = one cent a minute: easy sums.
PRICE = 0.60


def ago(**kw) -> datetime:
    return NOW - timedelta(**kw)


def annex(budget, *, prices=(("m5.large", PRICE),), lease_left_min=60, stopped="",
          name="a1", drain=None, ended=None) -> AnnexRecord:
    spec = {"budget_usd": budget, "budget_prices": [list(p) for p in prices],
            "instance_type": "m5.large"}
    if drain is not None:
        spec["budget_drain"] = {"at": drain.isoformat(), "reason": "budget: spent"}
    if ended is not None:
        spec["budget_ended_usd"] = ended
    return AnnexRecord(name, spec, 2, NOW + timedelta(minutes=lease_left_min), ago(hours=1),
                       launch_stopped=stopped)


def inst(iid, minutes, ec2="running", itype="m5.large", annex="a1") -> SeenInstance:
    return SeenInstance(iid, annex, ec2, ago(minutes=minutes), f"{annex}_tok",
                        instance_type=itype)


def row(iid, state, since, annex="a1") -> InstanceRecord:
    return InstanceRecord(iid, annex, f"{annex}_tok", state.value, since)


def snap(annexes, instances, rows=(), busy=(), ads=None) -> Snapshot:
    return Snapshot(instances={i.instance_id: i for i in instances}, startd_ads=ads or {},
                    store=StoreView(annexes={a.name: a for a in annexes},
                                    instances={r.instance_id: r for r in rows}),
                    busy=frozenset(busy))


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def test_two_instances_20_min_in_at_one_cent_a_minute_have_spent_40_cents_at_120_an_hour():
    s = snap([annex(5.0)], [inst("i-1", 20), inst("i-2", 20)])
    spent, rate = spend(s, "a1", {"m5.large": PRICE}, NOW)
    assert round(spent, 6) == 0.40 and rate == 1.20


def test_an_annex_whose_spend_plus_a_minute_reaches_its_budget_is_drained_first():
    # 2 x 20 min = $0.40 spent, one more minute of both = $0.02: $0.42 reaches $0.42.
    # Both nodes are in the pool: they are asked to leave it (jobs back to the queue), not
    # terminated, and the annex is not ended yet.
    actions = plan(snap([annex(0.42)], [inst("i-1", 20), inst("i-2", 20)],
                        ads={"i-1": 1, "i-2": 1}), NOW)
    drains = of(actions, DrainForBudget)
    assert [(d.annex, d.drain, d.terminate) for d in drains] == [("a1", ("i-1", "i-2"), ())]
    assert drains[0].reason.startswith("budget: $0.40 spent of its $0.42 budget")
    assert not of(actions, EndAnnex) and not of(actions, StopLaunching)


def test_one_cent_short_of_the_end_the_annex_only_stops_growing():
    # $0.40 + $0.02 < $0.43; but 60 more minutes at $1.20/h = $1.60 > $0.43.
    actions = plan(snap([annex(0.43)], [inst("i-1", 20), inst("i-2", 20)]), NOW)
    assert not of(actions, EndAnnex)
    stops = of(actions, StopLaunching)
    assert [s.annex for s in stops] == ["a1"]
    assert stops[0].reason.startswith("budget: $1.60 by its lease end")


def test_an_annex_whose_lease_fits_its_budget_is_left_alone():
    # $0.40 spent + 60 min x $1.20/h = $1.60 <= $1.60.
    assert plan(snap([annex(1.60)], [inst("i-1", 20), inst("i-2", 20)]), NOW) == []


def test_growth_is_stopped_once():
    s = snap([annex(0.43, stopped="budget: earlier")], [inst("i-1", 20), inst("i-2", 20)])
    assert plan(s, NOW) == []


def test_an_annex_without_a_budget_is_never_ended_for_money():
    assert plan(snap([annex(0)], [inst("i-1", 600)]), NOW) == []


def test_an_ended_instance_counts_until_the_store_saw_it_end():
    # i-2 ran 20 min then ended 10 min ago: 30 min at one cent = $0.30 in all, rate $0.60/h.
    s = snap([annex(5.0)], [inst("i-1", 20), inst("i-2", 30, ec2="terminated")],
             rows=[row("i-2", L.TERMINATED, ago(minutes=10))])
    spent, rate = spend(s, "a1", {"m5.large": PRICE}, NOW)
    assert round(spent, 6) == 0.40 and rate == 0.60


def test_an_ended_instance_the_store_did_not_see_end_counts_until_now():
    s = snap([annex(5.0)], [inst("i-2", 30, ec2="terminated")])
    assert round(spend(s, "a1", {"m5.large": PRICE}, NOW)[0], 6) == 0.30


def test_a_young_instance_counts_ec2s_minimum_minute():
    s = snap([annex(5.0)], [inst("i-1", 0)])
    assert round(spend(s, "a1", {"m5.large": PRICE}, NOW)[0], 6) == 0.01


def test_a_type_without_a_kept_price_counts_at_the_dearest_never_zero():
    prices = (("m5.large", PRICE), ("m5.xlarge", 2 * PRICE))
    s = snap([annex(5.0, prices=prices)], [inst("i-1", 10, itype="c9.huge")])
    assert round(spend(s, "a1", dict(prices), NOW)[0], 6) == 0.20


def test_fleet_instances_count_at_their_own_types_price():
    prices = (("m5.large", PRICE), ("m5.xlarge", 2 * PRICE))
    s = snap([annex(5.0, prices=prices)],
             [inst("i-1", 10), inst("i-2", 10, itype="m5.xlarge")])
    spent, rate = spend(s, "a1", dict(prices), NOW)
    assert round(spent, 6) == 0.30 and round(rate, 6) == 1.80


def test_an_annex_a_live_command_holds_is_left_to_it():
    assert plan(snap([annex(0.01)], [inst("i-1", 20)], busy=["a1"]), NOW) == []


def test_other_annexes_instances_do_not_count():
    s = snap([annex(0.42), annex(0.42, name="a2")],
             [inst("i-1", 20), inst("i-2", 20), inst("i-3", 5, annex="a2")])
    assert [e.annex for e in of(plan(s, NOW), DrainForBudget)] == ["a1"]


def test_an_ended_annex_is_left_alone_by_later_rules():
    ending: set[str] = set()
    budget_rules(snap([annex(0.01, drain=ago(seconds=5))], [inst("i-1", 20)]), NOW, ending)
    assert ending == {"a1"}


def test_a_budget_without_prices_is_not_guessed():
    assert plan(snap([annex(0.01, prices=())], [inst("i-1", 20)]), NOW) == []
