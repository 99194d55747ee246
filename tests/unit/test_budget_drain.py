"""The budget's graceful end, its growth stop lifted, and the cost of ended instances kept
(issue 12 item 5), through the planner on synthetic snapshots."""

from __future__ import annotations

from datetime import timedelta

from condor_annex.reconciler.actions import EndAnnex, StopLaunching
from condor_annex.reconciler.budget import (DRAIN_MAX_S, Billed, spend, spend_of, tag_text)
from condor_annex.reconciler.budget_actions import (DrainForBudget, RecordBudgetSpend,
                                                    ResumeLaunching)
from condor_annex.reconciler.plan import plan
from condor_annex.state.lifecycle import Lifecycle as L
from tests.unit.test_budget_rules import NOW, PRICE, ago, annex, inst, of, row, snap


def test_nodes_not_in_the_pool_are_terminated_at_once_the_others_drain():
    s = snap([annex(0.42)], [inst("i-1", 20), inst("i-2", 20)], ads={"i-1": 2})
    (drain,) = of(plan(s, NOW), DrainForBudget)
    assert drain.drain == ("i-1",) and drain.terminate == ("i-2",)
    assert drain.reason.endswith("its nodes leave the pool")


def test_without_the_collector_every_node_is_asked_to_leave_none_terminated():
    s = snap([annex(0.42)], [inst("i-1", 20), inst("i-2", 20)])
    s = type(s)(instances=s.instances, startd_ads=None, store=s.store)
    (drain,) = of(plan(s, NOW), DrainForBudget)
    assert drain.drain == ("i-1", "i-2") and drain.terminate == ()


def test_a_draining_annex_is_not_ended_while_its_nodes_leave_within_the_window():
    # Drained 10 s ago; $0.40 + 15 s of $1.20/h = $0.405 < $0.42: the window is still open.
    s = snap([annex(0.42, drain=ago(seconds=10))], [inst("i-1", 20), inst("i-2", 20)])
    assert of(plan(s, NOW), EndAnnex) == [] and of(plan(s, NOW), DrainForBudget) == []


def test_a_draining_annex_whose_nodes_left_is_ended_saying_its_budget_ended_it():
    s = snap([annex(0.42, drain=ago(seconds=10))],
             [inst("i-1", 20, ec2="terminated"), inst("i-2", 20, ec2="shutting-down")])
    (end,) = of(plan(s, NOW), EndAnnex)
    assert end.annex == "a1" and end.reason.startswith("budget")
    assert end.reason.endswith("ended: its nodes left the pool")


def test_a_draining_annex_is_ended_when_its_spend_reaches_the_budget_itself():
    # $0.40 + 15 s of $1.20/h = $0.405 >= $0.405: terminate now, nodes up or not.
    s = snap([annex(0.405, drain=ago(seconds=10))], [inst("i-1", 20), inst("i-2", 20)])
    (end,) = of(plan(s, NOW), EndAnnex)
    assert "drain window is over" in end.reason


def test_a_drain_that_lasts_too_long_ends_the_annex_whatever_the_spend():
    s = snap([annex(100.0, drain=ago(seconds=DRAIN_MAX_S))], [inst("i-1", 20)])
    assert [e.annex for e in of(plan(s, NOW), EndAnnex)] == ["a1"]


def test_a_draining_annex_gets_no_growth_rule():
    s = snap([annex(0.5, drain=ago(seconds=5), stopped="budget: x")], [inst("i-1", 20)])
    assert plan(s, NOW) == []


def test_the_budget_growth_stop_is_lifted_when_the_projection_fits_again():
    # $0.40 spent + 60 min at $1.20/h = $1.60 <= a budget raised to $2.
    s = snap([annex(2.0, stopped="budget: $1.60 by its lease end ...")],
             [inst("i-1", 20), inst("i-2", 20)])
    (resume,) = of(plan(s, NOW), ResumeLaunching)
    assert resume.annex == "a1" and not of(plan(s, NOW), StopLaunching)


def test_the_growth_stop_is_lifted_when_instances_ended():
    # One of the two ended 10 minutes ago: $0.30 + 60 min at $0.60/h = $0.90 <= $1.00.
    s = snap([annex(1.0, stopped="budget: earlier")],
             [inst("i-1", 20), inst("i-2", 20, ec2="terminated")],
             rows=[row("i-2", L.TERMINATED, ago(minutes=10))])
    assert [r.annex for r in of(plan(s, NOW), ResumeLaunching)] == ["a1"]


def test_a_stop_for_another_reason_is_never_lifted_by_the_budget():
    s = snap([annex(100.0, stopped="3 nodes in a row never joined the pool")],
             [inst("i-1", 20)])
    assert of(plan(s, NOW), ResumeLaunching) == []


def test_a_stop_still_needed_is_kept():
    s = snap([annex(0.43, stopped="budget: earlier")], [inst("i-1", 20), inst("i-2", 20)])
    assert plan(s, NOW) == []


def test_an_ended_instance_has_its_cost_kept_and_tagged_once():
    s = snap([annex(5.0)], [inst("i-1", 20), inst("i-2", 30, ec2="terminated")],
             rows=[row("i-2", L.TERMINATED, ago(minutes=10))])
    (rec,) = of(plan(s, NOW), RecordBudgetSpend)
    assert rec.ended_usd == (("i-2", 0.2),)
    assert rec.tag_value == "5 m5.large=0.6 spent=0.200000"
    kept = snap([annex(5.0, ended={"i-2": 0.2})], list(s.instances.values()),
                rows=list(s.store.instances.values()))
    assert of(plan(kept, NOW), RecordBudgetSpend) == []


def test_instances_ec2_no_longer_lists_count_at_the_cost_kept():
    # i-9 ended over an hour ago (not listed any more): its $3 counts.
    s = snap([annex(3.21, ended={"i-9": 3.0})], [inst("i-1", 20)])
    spent, rate = spend(s, "a1", {"m5.large": PRICE}, NOW)
    assert round(spent, 6) == 3.20 and rate == 0.60
    assert [d.annex for d in of(plan(s, NOW), DrainForBudget)] == ["a1"]


def test_a_listed_instance_is_counted_from_ec2_not_twice():
    s = snap([annex(5.0, ended={"i-2": 0.2})],
             [inst("i-2", 30, ec2="terminated")],
             rows=[row("i-2", L.TERMINATED, ago(minutes=10))])
    assert round(spend(s, "a1", {"m5.large": PRICE}, NOW)[0], 6) == 0.20


def test_spend_of_counts_a_day_without_the_undated_kept_costs():
    inst_ = Billed("i-1", "running", NOW - timedelta(minutes=30), "m5.large")
    spent, _ = spend_of([inst_], {"m5.large": PRICE}, NOW, since=NOW - timedelta(minutes=10),
                        recorded={"i-9": 5.0})
    assert round(spent, 6) == 0.10


def test_tag_text_leaves_out_a_zero_spend():
    assert tag_text(2.5, [("m5.large", 0.096)]) == "2.5 m5.large=0.096"


def test_the_spent_amount_fits_in_the_room_create_keeps_in_the_tag():
    from condor_annex.service.budget_check import SPENT_ROOM
    prices = [(f"m5.{n}xlarge", 123.456789) for n in range(9)]
    base = tag_text(999999.5, prices)
    assert len(tag_text(999999.5, prices, 999999.999999)) - len(base) <= SPENT_ROOM
