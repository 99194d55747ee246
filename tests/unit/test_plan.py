"""The planner on synthetic snapshots: what a user would see the reconciler do, pass by pass."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from condor_annex.reconciler.actions import (AdoptInstance, EndAnnex, MarkLaunch,
                                             RecordTransition, RollBackLaunch, SaveConsole,
                                             StopLaunching, SyncLease, Terminate)
from condor_annex.reconciler.plan import PlanSettings, plan
from condor_annex.reconciler.snapshot import SeenFleet, SeenInstance, Snapshot, StoreView
from condor_annex.state.lifecycle import Lifecycle as L
from condor_annex.state.records import AnnexRecord, InstanceRecord, LaunchRecord

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def ago(**kw) -> datetime:
    return NOW - timedelta(**kw)


def annex(name="a1", *, lease_end=None, created=None, stopped="") -> AnnexRecord:
    return AnnexRecord(name, {}, 3, lease_end or NOW + timedelta(hours=1),
                       created or ago(minutes=30), launch_stopped=stopped)


def row(iid, state, *, annex="a1", since=None, token="a1_tok") -> InstanceRecord:
    return InstanceRecord(iid, annex, token, state.value, since or ago(minutes=20))


def seen(iid, ec2="running", *, annex="a1", launched=None, token="a1_tok") -> SeenInstance:
    return SeenInstance(iid, annex, ec2, launched or ago(minutes=20), token)


def launch(token="a1_tok", *, state="launched", at=None, annex="a1", kind="on-demand"):
    at = at or ago(minutes=30)
    return LaunchRecord(token, annex, kind, 3, state, at, at)


def snap(*, rows=(), seen_=(), ads=None, annexes=None, launches=(launch(),), leases=None,
         fleets=(), outcomes=None, busy=(), no_collector=False) -> Snapshot:
    annexes = annexes if annexes is not None else [annex()]
    return Snapshot(instances={i.instance_id: i for i in seen_},
                    startd_ads=None if no_collector else ads or {}, busy=frozenset(busy),
                    leases=leases, fleets={f.fleet_id: f for f in fleets},
                    store=StoreView(annexes={a.name: a for a in annexes},
                                    launch_requests=tuple(launches),
                                    instances={r.instance_id: r for r in rows},
                                    join_outcomes=outcomes or {}))


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


WHY = "never joined: no startd ad 600 s after launch; see condor_annex logs a1 i-1"


def test_an_instance_running_11_min_with_no_ad_is_terminated_as_never_joined_console_first():
    actions = plan(snap(rows=[row("i-1", L.ALLOCATED)],
                        seen_=[seen("i-1", launched=ago(minutes=11))]), NOW)
    assert actions == [
        RecordTransition("i-1", L.ALLOCATED, L.NEVER_JOINED, WHY),
        SaveConsole("i-1", "a1", WHY),
        Terminate(("i-1",), "a1", "never joined")]


def test_an_instance_running_9_min_with_no_ad_is_left_alone():
    assert plan(snap(rows=[row("i-1", L.ALLOCATED)],
                     seen_=[seen("i-1", launched=ago(minutes=9))]), NOW) == []


def test_the_join_deadline_is_a_setting():
    s = snap(rows=[row("i-1", L.ALLOCATED)], seen_=[seen("i-1", launched=ago(minutes=3))])
    assert of(plan(s, NOW, PlanSettings(join_deadline_s=120)), Terminate)


def test_a_joined_node_is_never_terminated_for_the_deadline_even_without_an_ad_now():
    # A collector hiccup must not end nodes that joined.
    assert plan(snap(rows=[row("i-1", L.JOINED)],
                     seen_=[seen("i-1", launched=ago(hours=2))]), NOW) == []


def test_a_late_startd_ad_makes_it_joined_not_terminated():
    actions = plan(snap(rows=[row("i-1", L.ALLOCATED)],
                        seen_=[seen("i-1", launched=ago(minutes=30))], ads={"i-1": 2}), NOW)
    assert actions == [RecordTransition("i-1", L.ALLOCATED, L.JOINED,
                                        "its startd ad is in the collector")]


def test_a_never_joined_instance_whose_terminate_was_lost_is_saved_and_terminated_again():
    actions = plan(snap(rows=[row("i-1", L.NEVER_JOINED)],
                        seen_=[seen("i-1", launched=ago(minutes=15))]), NOW)
    assert [type(a) for a in actions] == [SaveConsole, Terminate]


def test_several_never_joined_in_one_annex_are_one_terminate_after_every_console():
    rows = [row(f"i-{n}", L.ALLOCATED) for n in range(3)]
    seen_ = [seen(f"i-{n}", launched=ago(minutes=12)) for n in range(3)]
    actions = plan(snap(rows=rows, seen_=seen_), NOW)
    (term,) = of(actions, Terminate)
    assert term.instance_ids == ("i-0", "i-1", "i-2")
    assert max(actions.index(a) for a in of(actions, SaveConsole)) < actions.index(term)


def test_transitions_seen_in_ec2_are_recorded_in_table_order():
    rows = [row("i-req", L.REQUESTED), row("i-join", L.REQUESTED), row("i-off", L.JOINED),
            row("i-gone", L.TERMINATING), row("i-dead", L.REQUESTED)]
    seen_ = [seen("i-req", "pending", launched=ago(seconds=30)),
             seen("i-join", launched=ago(minutes=2)), seen("i-off", "shutting-down"),
             seen("i-dead", "terminated")]
    actions = plan(snap(rows=rows, seen_=seen_, ads={"i-join": 1}), NOW)
    assert [(a.instance_id, a.from_state, a.to_state) for a in actions] == [
        ("i-req", L.REQUESTED, L.ALLOCATED),
        ("i-join", L.REQUESTED, L.ALLOCATED), ("i-join", L.ALLOCATED, L.JOINED),
        ("i-off", L.JOINED, L.TERMINATING),
        ("i-gone", L.TERMINATING, L.TERMINATED),
        ("i-dead", L.REQUESTED, L.TERMINATED)]   # it may have run: never "failed"


def test_a_requested_instance_ec2_never_lists_fails_only_after_the_grace():
    s = snap(rows=[row("i-1", L.REQUESTED, since=ago(seconds=60))])
    assert plan(s, NOW) == []
    s = snap(rows=[row("i-1", L.REQUESTED, since=ago(minutes=5))])
    assert plan(s, NOW) == [RecordTransition("i-1", L.REQUESTED, L.ALLOCATION_FAILED,
                                             "not listed by EC2 180 s after its launch")]


def test_terminated_instances_still_listed_are_not_recorded_again():
    assert plan(snap(rows=[row("i-1", L.TERMINATED)], seen_=[seen("i-1", "terminated")]),
                NOW) == []


def test_an_annex_whose_lease_passed_is_ended_and_its_nodes_are_not_terminated_one_by_one():
    actions = plan(snap(annexes=[annex(lease_end=ago(seconds=1))],
                        rows=[row("i-1", L.ALLOCATED)],
                        seen_=[seen("i-1", launched=ago(minutes=30))]), NOW)
    assert actions == [EndAnnex("a1", "its lease ended at 2026-03-01 11:59:59 UTC")]


def test_the_cloud_lease_wins_over_the_store_extend_elsewhere_keeps_the_annex():
    later = NOW + timedelta(hours=2)
    s = snap(annexes=[annex(lease_end=ago(minutes=5))], leases={"a1": later})
    assert plan(s, NOW) == [SyncLease("a1", later, False,
                                      "the store's lease end differs from the lease's")]


def test_instances_tagged_with_another_lease_end_are_tagged_again():
    """An extend killed after its tags and before its schedule: the schedule wins."""
    end = NOW + timedelta(hours=1)
    moved = SeenInstance("i-1", "a1", "running", ago(minutes=5), "a1_tok", end + timedelta(hours=3))
    actions = plan(snap(annexes=[annex(lease_end=end)], leases={"a1": end}, seen_=[moved],
                        rows=[row("i-1", L.ALLOCATED)]), NOW)
    assert of(actions, SyncLease) == [SyncLease("a1", end, True, "instances carry another "
                                                "lease end than the lease (an extend stopped "
                                                "part-way)")]
    # ... but not while the extend still runs (it holds the annex's lock).
    assert of(plan(snap(annexes=[annex(lease_end=end)], leases={"a1": end}, seen_=[moved],
                        rows=[row("i-1", L.ALLOCATED)], busy=["a1"]), NOW), SyncLease) == []


def test_an_annex_whose_lease_is_gone_from_the_cloud_is_ended_once_no_command_holds_it():
    assert of(plan(snap(leases={}), NOW), EndAnnex) == \
        [EndAnnex("a1", "its lease is gone (ended by off elsewhere, by the lease enforcer, or "
                        "a create that died before making it)", if_lease_gone=True)]
    # A create that just recorded its annex (and holds its lock) has not made its lease yet.
    assert plan(snap(annexes=[annex(created=ago(seconds=10))], leases={}, busy=["a1"]),
                NOW) == []


def test_an_off_that_died_part_way_is_finished():
    off = AnnexRecord("a1", {}, 3, NOW + timedelta(hours=1), ago(minutes=30),
                      off_requested_at=ago(seconds=5))
    assert of(plan(snap(annexes=[off]), NOW), EndAnnex) == [
        EndAnnex("a1", "an off of this annex stopped part-way; finishing it")]
    assert plan(snap(annexes=[off], busy=["a1"]), NOW) == []


def test_unreadable_leases_never_end_an_annex_whose_store_lease_is_ahead():
    assert plan(snap(leases=None), NOW) == []


def test_a_launch_killed_during_its_call_is_rolled_back_and_its_empty_annex_ended():
    actions = plan(snap(launches=[launch(state="recorded", at=ago(seconds=4))]), NOW)
    assert actions == [
        RollBackLaunch("a1_tok", "a1", "the command that made it ended before its launch call "
                                       "returned, and nothing with its client token is listed"),
        EndAnnex("a1", "its create stopped before anything was launched; what it made (lease, "
                       "bundle, role) is removed")]


def test_a_killed_launch_adding_to_a_live_annex_rolls_back_only_itself():
    actions = plan(snap(launches=[launch("a1_old"), launch("a1_new", state="recorded")],
                        rows=[row("i-1", L.JOINED, token="a1_old")],
                        seen_=[seen("i-1", token="a1_old")], ads={"i-1": 1}), NOW)
    assert [type(a) for a in actions] == [RollBackLaunch]
    assert actions[0].client_token == "a1_new"


def test_a_launch_still_in_its_call_is_left_alone():
    assert plan(snap(launches=[launch(state="recorded", at=ago(minutes=30))], busy=["a1"]),
                NOW) == []


def test_a_launch_of_an_annex_that_ended_is_rolled_back():
    actions = plan(snap(annexes=[annex(lease_end=ago(minutes=1))],
                        launches=[launch(state="recorded", at=ago(minutes=4))]), NOW)
    assert [type(a) for a in actions] == [EndAnnex, RollBackLaunch]
    assert actions[1].reason == "its annex ended"


def test_no_instance_is_judged_never_joined_when_the_collector_was_not_read():
    s = snap(rows=[row("i-1", L.ALLOCATED)], seen_=[seen("i-1", launched=ago(minutes=50))],
             no_collector=True)
    assert plan(s, NOW) == []


def test_an_annex_join_deadline_from_its_spec_wins_over_the_setting():
    quick = AnnexRecord("a1", {"join_deadline_s": 120}, 3, NOW + timedelta(hours=1),
                        ago(minutes=30))
    s = snap(annexes=[quick], rows=[row("i-1", L.ALLOCATED)],
             seen_=[seen("i-1", launched=ago(minutes=3))])
    assert [type(a) for a in plan(s, NOW)] == [RecordTransition, SaveConsole, Terminate]
    assert "no startd ad 120 s after launch" in plan(s, NOW)[0].reason


def test_instances_of_a_killed_launch_are_adopted_and_the_launch_marked():
    actions = plan(snap(launches=[launch(state="recorded", at=ago(seconds=20))],
                        seen_=[seen("i-9", "pending", launched=ago(seconds=10)),
                               seen("i-x", token="other_tok")]), NOW)
    assert actions == [
        AdoptInstance("i-9", "a1", "a1_tok", L.ALLOCATED, "listed by EC2 with launch token "
                                                          "a1_tok"),
        MarkLaunch("a1_tok", "launched", "instances or a fleet with its client token are "
                                         "listed")]


def test_a_fleet_with_the_token_marks_the_launch_launched():
    actions = plan(snap(launches=[launch(state="recorded", at=ago(minutes=9),
                                         kind="ec2-fleet")],
                        fleets=[SeenFleet("fleet-1", "a1", "a1_tok", "active")]), NOW)
    assert [type(a) for a in actions] == [MarkLaunch]


def test_a_failed_terminate_is_sent_again():
    actions = plan(snap(rows=[row("i-1", L.TERMINATION_FAILED)],
                        seen_=[seen("i-1")]), NOW)
    assert actions == [Terminate(("i-1",), "a1", "terminate failed on an earlier pass; "
                                                 "sent again")]


@pytest.mark.parametrize("history,new,stops", [
    ((True, False, False), 1, True),     # the third in a row
    ((False, True, False), 1, False),    # a join broke the streak
    ((), 3, True),                       # three at once
    ((), 2, False),
])
def test_the_annex_stops_replacing_after_three_never_joined_nodes_in_a_row(history, new, stops):
    rows = [row(f"i-{n}", L.ALLOCATED) for n in range(new)]
    seen_ = [seen(f"i-{n}", launched=ago(minutes=12)) for n in range(new)]
    actions = plan(snap(rows=rows, seen_=seen_, outcomes={"a1": history}), NOW)
    stop = of(actions, StopLaunching)
    assert bool(stop) is stops
    if stops:
        assert "nodes in a row never joined the pool; no replacements are launched" in \
            stop[0].reason


def test_an_annex_that_stopped_launching_rolls_back_a_killed_launch_with_that_reason():
    actions = plan(snap(annexes=[annex(stopped="3 nodes in a row never joined")],
                        launches=[launch(state="recorded", at=ago(minutes=4))]), NOW)
    assert actions[0] == RollBackLaunch("a1_tok", "a1", "launching stopped: 3 nodes in a row "
                                                        "never joined")


def test_plan_is_pure_the_same_snapshot_gives_the_same_actions():
    s = snap(rows=[row("i-1", L.ALLOCATED)], seen_=[seen("i-1", launched=ago(minutes=11))])
    assert plan(s, NOW) == plan(s, NOW)
    assert plan(s, ago(minutes=5)) == []   # the time is an argument, never the clock


def _job_annex(deadline_s: int = 1800) -> AnnexRecord:
    return AnnexRecord("a1", {"job_deadline_s": deadline_s}, 3, NOW + timedelta(hours=1),
                       ago(hours=1))


def test_a_node_on_which_no_job_started_within_the_job_deadline_is_ended():
    s = Snapshot(instances={"i-1": seen("i-1", launched=ago(minutes=40))},
                 startd_ads={"i-1": 1}, worked=frozenset(),
                 store=StoreView(annexes={"a1": _job_annex()}, launch_requests=(launch(),),
                                 instances={"i-1": row("i-1", L.JOINED, since=ago(minutes=31))}))
    actions = plan(s, NOW)
    assert actions == [
        RecordTransition("i-1", L.JOINED, L.TERMINATING, "no job ran on it in the 1800 s since "
                                                         "it joined the pool (--job-deadline)"),
        Terminate(("i-1",), "a1", "no job ran on it")]


@pytest.mark.parametrize("worked,since_min,deadline,collector", [
    (frozenset({"i-1"}), 31, 1800, True),    # a job started on it: kept
    (frozenset(), 29, 1800, True),           # not yet
    (frozenset(), 31, 0, True),              # no deadline (the default)
    (frozenset(), 31, 1800, False),          # the collector was not read: no judgement
])
def test_the_job_deadline_spares_nodes_that_worked_or_are_young_or_unjudged(
        worked, since_min, deadline, collector):
    s = Snapshot(instances={"i-1": seen("i-1", launched=ago(minutes=40))},
                 startd_ads={"i-1": 1} if collector else None,
                 worked=worked if collector else None,
                 store=StoreView(annexes={"a1": _job_annex(deadline)},
                                 launch_requests=(launch(),),
                                 instances={"i-1": row("i-1", L.JOINED,
                                                       since=ago(minutes=since_min))}))
    assert plan(s, NOW) == []


def test_a_spot_interruption_is_recorded_once_for_status():
    from condor_annex.reconciler.actions import RecordInterruption
    gone = SeenInstance("i-1", "a1", "terminated", ago(minutes=20), "a1_tok", None, "m5.large",
                        "Server.SpotInstanceTermination")
    s = snap(rows=[row("i-1", L.JOINED)], seen_=[gone])
    assert of(plan(s, NOW), RecordInterruption) == [RecordInterruption(
        "i-1", "a1", "m5.large", "spot interruption (m5.large): EC2 reclaimed it")]
    recorded = Snapshot(instances=s.instances, startd_ads={}, store=StoreView(
        annexes=s.store.annexes, launch_requests=s.store.launch_requests,
        instances=s.store.instances, interrupted=frozenset({"i-1"})))
    assert of(plan(recorded, NOW), RecordInterruption) == []
    # A user's own terminate is not an interruption.
    own = SeenInstance("i-1", "a1", "terminated", ago(minutes=20), "a1_tok", None, "m5.large",
                       "Client.UserInitiatedShutdown")
    assert of(plan(snap(rows=[row("i-1", L.JOINED)], seen_=[own]), NOW), RecordInterruption) == []


def test_a_node_advertising_its_interruption_notice_is_recorded_before_ec2_ends_it():
    from condor_annex.reconciler.actions import RecordInterruption
    draining = SeenInstance("i-1", "a1", "running", ago(minutes=20), "a1_tok", None, "m5.large")
    s = Snapshot(instances={"i-1": draining}, startd_ads={"i-1": 1},
                 interrupting=frozenset({"i-1"}),
                 store=StoreView(annexes={"a1": annex()}, launch_requests=(launch(),),
                                 instances={"i-1": row("i-1", L.JOINED)}))
    assert [a.instance_id for a in plan(s, NOW) if isinstance(a, RecordInterruption)] == ["i-1"]


@pytest.mark.parametrize("lease_left_min,stopped,wanted", [
    (60, "", True),                              # replaced
    (5, "", False),                              # too close to the lease end
    (60, "budget: projected over", False),       # growth stopped (budget, protected mode)
])
def test_an_interrupted_node_is_replaced_only_with_lease_left_and_growth_allowed(
        lease_left_min, stopped, wanted):
    from condor_annex.reconciler.actions import WantReplacement
    gone = SeenInstance("i-1", "a1", "terminated", ago(minutes=20), "a1_tok", None, "m5.large",
                        "Server.SpotInstanceTermination")
    a = AnnexRecord("a1", {}, 3, NOW + timedelta(minutes=lease_left_min), ago(minutes=30),
                    launch_stopped=stopped)
    actions = plan(snap(annexes=[a], rows=[row("i-1", L.JOINED)], seen_=[gone]), NOW)
    assert bool(of(actions, WantReplacement)) is wanted
