"""The planner on synthetic snapshots: what a user would see the reconciler do, pass by pass."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from condor_annex.reconciler.actions import (AdoptInstance, EndAnnex, MarkLaunch,
                                             RecordTransition, ResumeLaunch, RollBackLaunch,
                                             SaveConsole, StopLaunching, Terminate)
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
         fleets=(), outcomes=None) -> Snapshot:
    annexes = annexes if annexes is not None else [annex()]
    return Snapshot(instances={i.instance_id: i for i in seen_}, startd_ads=ads or {},
                    leases=leases, fleets={f.fleet_id: f for f in fleets},
                    store=StoreView(annexes={a.name: a for a in annexes},
                                    launch_requests=tuple(launches),
                                    instances={r.instance_id: r for r in rows},
                                    join_outcomes=outcomes or {}))


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def test_an_instance_running_11_min_with_no_ad_is_terminated_as_never_joined_console_first():
    actions = plan(snap(rows=[row("i-1", L.ALLOCATED)],
                        seen_=[seen("i-1", launched=ago(minutes=11))]), NOW)
    assert actions == [
        RecordTransition("i-1", L.ALLOCATED, L.NEVER_JOINED,
                         "never joined: no startd ad 600 s after launch"),
        SaveConsole("i-1", "a1", "never joined: no startd ad 600 s after launch"),
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
        ("i-dead", L.REQUESTED, L.ALLOCATION_FAILED)]


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
    s = snap(annexes=[annex(lease_end=ago(minutes=5))], leases={"a1": NOW + timedelta(hours=2)})
    assert plan(s, NOW) == []


def test_an_annex_whose_lease_is_gone_from_the_cloud_is_ended_after_the_grace():
    assert of(plan(snap(leases={}), NOW), EndAnnex) == \
        [EndAnnex("a1", "its lease is gone (ended by off elsewhere or by the lease enforcer)")]
    # A create that just recorded its annex has not made its lease yet.
    assert plan(snap(annexes=[annex(created=ago(seconds=10))], leases={}), NOW) == []


def test_unreadable_leases_never_end_an_annex_whose_store_lease_is_ahead():
    assert plan(snap(leases=None), NOW) == []


def test_a_launch_killed_during_its_call_is_resumed_with_its_client_token():
    actions = plan(snap(launches=[launch(state="recorded", at=ago(minutes=4))]), NOW)
    assert actions == [ResumeLaunch("a1_tok", "a1", "on-demand", 3,
                                    "recorded 180 s ago and nothing listed: re-sent with its "
                                    "client token")]


def test_a_launch_still_in_its_call_is_left_alone():
    assert plan(snap(launches=[launch(state="recorded", at=ago(seconds=30))]), NOW) == []


def test_a_resumed_launch_that_still_shows_nothing_is_rolled_back():
    actions = plan(snap(launches=[launch(state="resuming", at=ago(minutes=4))]), NOW)
    assert actions == [RollBackLaunch("a1_tok", "a1", "nothing listed 180 s after it was "
                                                      "re-sent")]


def test_a_launch_of_an_annex_that_ended_is_rolled_back_not_resumed():
    actions = plan(snap(annexes=[annex(lease_end=ago(minutes=1))],
                        launches=[launch(state="recorded", at=ago(minutes=4))]), NOW)
    assert [type(a) for a in actions] == [EndAnnex, RollBackLaunch]


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


def test_an_annex_that_stopped_launching_does_not_resume_a_killed_launch():
    actions = plan(snap(annexes=[annex(stopped="3 nodes in a row never joined")],
                        launches=[launch(state="recorded", at=ago(minutes=4))]), NOW)
    assert actions == [RollBackLaunch("a1_tok", "a1", "launching stopped: 3 nodes in a row "
                                                      "never joined")]


def test_plan_is_pure_the_same_snapshot_gives_the_same_actions():
    s = snap(rows=[row("i-1", L.ALLOCATED)], seen_=[seen("i-1", launched=ago(minutes=11))])
    assert plan(s, NOW) == plan(s, NOW)
    assert plan(s, ago(minutes=5)) == []   # the time is an argument, never the clock
