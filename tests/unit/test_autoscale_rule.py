"""The autoscale rule (issue 13) through the planner, on synthetic snapshots and a fake clock:
settle time, --max, the lease, the budget, --min, a claimed slot never ended, and a partial
view that holds the annex's size."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from condor_annex.reconciler.actions import StopLaunching, Terminate
from condor_annex.reconciler.autoscale_action import SetAutoscale
from condor_annex.reconciler.plan import PlanSettings, plan
from condor_annex.reconciler.snapshot import SeenInstance, Snapshot, StoreView
from condor_annex.state.autoscale_record import AutoscaleRecord
from condor_annex.state.lifecycle import Lifecycle as L
from condor_annex.state.records import AnnexRecord, InstanceRecord

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
#: A type of 2 cores: a node takes two one-core jobs.
TEMPLATE = {"Cpus": 2, "Memory": 7680, "AnnexName": "a1"}


def at(seconds: float) -> datetime:
    """The fake clock: ``seconds`` after T0."""
    return T0 + timedelta(seconds=seconds)


def annex(*, lease_left_s=3600.0, stopped="", spec=None, now=T0) -> AnnexRecord:
    return AnnexRecord("a1", {"instance_type": "m5.large", **(spec or {})}, 0,
                       now + timedelta(seconds=lease_left_s), T0 - timedelta(hours=1),
                       launch_stopped=stopped)


def scaled(*, lo=0, hi=4, above=None) -> AutoscaleRecord:
    return AutoscaleRecord("a1", lo, hi, dict(TEMPLATE), above_since=above)


def node(iid, state=L.JOINED, minutes=10):
    seen = SeenInstance(iid, "a1", "running", T0 - timedelta(minutes=minutes), "a1_tok",
                        instance_type="m5.large")
    row = InstanceRecord(iid, "a1", "a1_tok", state.value, T0 - timedelta(minutes=minutes))
    return seen, row


def snap(*, nodes=(), demand=None, free=0, rec=None, rec_annex=None, holding="",
         ads=None, busy=()) -> Snapshot:
    seen = {s.instance_id: s for s, _ in nodes}
    rows = {r.instance_id: r for _, r in nodes}
    a = rec_annex or annex()
    return Snapshot(instances=seen,
                    startd_ads=ads if ads is not None else
                    {r.instance_id: 1 for r in rows.values() if r.state == L.JOINED.value},
                    store=StoreView(annexes={"a1": a}, instances=rows,
                                    autoscale={"a1": rec or scaled()}),
                    demand=None if demand is None else {"a1": demand},
                    demand_holding=holding, free_cpus=None if demand is None and holding
                    else {"a1": free}, busy=frozenset(busy))


def decision(actions) -> SetAutoscale:
    found = [a for a in actions if isinstance(a, SetAutoscale)]
    assert len(found) == 1, actions
    return found[0]


def test_demand_first_seen_above_capacity_waits_for_the_settle_time():
    d = decision(plan(snap(demand=12), at(0)))
    assert d.want == 0 and d.above_since == at(0)
    assert d.reason == "demand 12 > capacity 0 for 0 s: waiting for the settle time (30 s)"


def test_demand_above_for_the_settle_time_grows_but_never_beyond_max():
    # 12 one-core jobs on 2-core nodes want 6 nodes; --max 4.
    d = decision(plan(snap(demand=12, rec=scaled(above=at(0))), at(31)))
    assert (d.want, d.target, d.want_keep) == (4, 4, 0)
    assert d.reason == "demand 12 > capacity 0 for 31 s: growing to 4 (max)"
    # A growth starts a new settle period.
    assert d.above_since == at(31)


def test_growth_counts_idle_and_booting_capacity_and_live_nodes():
    # One joined node with 1 free core, one booting (2 cores): capacity 3; demand 7 wants
    # ceil(4 / 2) = 2 more: target 4 of max 10.
    nodes = [node("i-1"), node("i-2", L.ALLOCATED, minutes=1)]
    d = decision(plan(snap(nodes=nodes, demand=7, free=1, rec=scaled(hi=10, above=at(0))),
                      at(40)))
    assert (d.want, d.target) == (2, 4)
    assert d.reason == "demand 7 > capacity 3 for 40 s: growing to 4"


def test_at_max_nothing_is_launched_and_status_says_so():
    nodes = [node(f"i-{n}") for n in range(4)]
    d = decision(plan(snap(nodes=nodes, demand=12, rec=scaled(above=at(0))), at(100)))
    assert d.want == 0 and d.target == 4
    assert d.reason == "demand 12 > capacity 0 for 100 s: at max (4)"


def test_a_burst_that_ends_within_the_settle_time_launches_nothing():
    first = decision(plan(snap(demand=12), at(0)))
    # The jobs finished 20 s later: demand 0 clears the first-seen time.
    gone = decision(plan(snap(demand=0, rec=scaled(above=first.above_since)), at(20)))
    assert gone.want == 0 and gone.above_since is None
    # Demand again at 40 s starts a new settle period: still nothing launched.
    again = decision(plan(snap(demand=12, rec=scaled(above=gone.above_since)), at(40)))
    assert again.want == 0 and again.above_since == at(40)


def test_the_settle_knob_is_the_planners_setting():
    d = decision(plan(snap(demand=3, rec=scaled(above=at(0))), at(5),
                      PlanSettings(autoscale_settle_s=5)))
    assert d.want == 2


def test_no_growth_within_ten_minutes_of_the_lease_end():
    rec_annex = annex(lease_left_s=300, now=at(31))
    d = decision(plan(snap(demand=12, rec=scaled(above=at(0)), rec_annex=rec_annex), at(31)))
    assert d.want == 0
    assert d.reason == "demand 12 > capacity 0 for 31 s: holding: its lease ends in 300 s"


def test_no_growth_once_launching_stopped_for_the_budget():
    rec_annex = annex(stopped="budget: $3.00 by its lease end would exceed its $2.00 budget")
    d = decision(plan(snap(demand=12, rec=scaled(above=at(0)), rec_annex=rec_annex), at(31)))
    assert d.want == 0 and "growth stopped: budget:" in d.reason


def test_growth_is_cut_to_what_the_budget_pays_for_until_the_lease_end():
    # $0.10/h, 1 h of lease left, nothing spent: a $0.25 budget pays for 2 instances.
    spec = {"budget_usd": 0.25, "budget_prices": [["m5.large", 0.10]]}
    rec_annex = annex(spec=spec, now=at(31))
    actions = plan(snap(demand=12, rec=scaled(above=at(0)), rec_annex=rec_annex), at(31))
    assert not [a for a in actions if isinstance(a, StopLaunching)]
    assert decision(actions).want == 2


def test_below_min_launches_at_once_with_no_idle_shutdown():
    d = decision(plan(snap(demand=0, rec=scaled(lo=2)), at(0)))
    assert (d.want, d.want_keep, d.target) == (2, 2, 2)
    assert d.reason == "below --min 2: launching 2"


def test_no_demand_never_terminates_a_node_claimed_or_idle():
    # Four nodes above --min 1, two of them running jobs, no demand left: nothing is ended;
    # idle ones leave by their own idle timeout.
    nodes = [node(f"i-{n}") for n in range(4)]
    actions = plan(snap(nodes=nodes, demand=0, free=4, rec=scaled(lo=1, above=at(0))), at(60))
    assert not [a for a in actions if isinstance(a, Terminate)]
    d = decision(actions)
    assert d.want == 0 and d.target == 4 and d.above_since is None
    assert d.reason == ("demand 0 <= capacity 4: idle nodes above --min 1 leave by their idle "
                        "timeout")


def test_a_schedd_that_does_not_answer_holds_the_size():
    nodes = [node("i-1")]
    d = decision(plan(snap(nodes=nodes, demand=None, holding="schedd submit@cm did not answer",
                           rec=scaled(lo=3, above=at(0))), at(100)))
    # Neither grown (not even to --min) nor shrunk; the first-seen time kept.
    assert d.want == 0 and d.target == 1 and d.demand is None
    assert d.above_since == at(0)
    assert d.reason == "holding: schedd submit@cm did not answer"


def test_a_collector_that_does_not_answer_holds_the_size():
    s = snap(demand=12, rec=scaled(above=at(0)))
    s = Snapshot(instances=s.instances, startd_ads=None, store=s.store, demand=s.demand,
                 free_cpus=None)
    d = decision(plan(s, at(100)))
    assert d.want == 0 and d.reason == "holding: the collector did not answer"


def test_an_annex_a_command_holds_is_left_to_it():
    assert not [a for a in plan(snap(demand=12, rec=scaled(above=at(0)), busy=("a1",)),
                                at(100)) if isinstance(a, SetAutoscale)]
