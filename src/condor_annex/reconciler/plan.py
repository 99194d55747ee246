"""The planner: ``plan(snapshot, now) -> list[Action]``, a pure function.

No I/O and no clock: everything it knows is in the :class:`~condor_annex.reconciler.snapshot.
Snapshot` and ``now``, so every rule is unit-tested on synthetic snapshots.  Rules run in this
order (passive before active, as Ray autoscaler v2's reconciler does):

1. **record what was seen**: each instance's lifecycle state follows EC2 and the collector
   (:func:`condor_annex.state.lifecycle.from_ec2_state`; a startd ad makes it JOINED), and
   instances carrying the client token of a launch request the store knows are adopted;
2. **end annexes whose lease passed** (or whose lease is gone from the cloud);
3. **never joined**: an instance alive longer than the join deadline without a startd ad is
   marked NEVER_JOINED, its console saved, then terminated (Karpenter and cluster-autoscaler
   delete such nodes after 15 min; ParallelCluster keeps their console output); a joined node
   on which no job started within its annex's first-job deadline (off by default) is ended;
4. **launch requests**: one still ``recorded`` whose annex no live command holds (the command
   died during its launch call) is marked launched when instances or a fleet with its client
   token are listed, else rolled back (what carries its token is ended; the executor looks
   again for EC2's listing lag); an annex whose only launches were rolled back is ended.  It
   is never re-sent: the request's user data may hold the user's secrets and is not stored;
5. **the lease as the cloud holds it** (its schedule ends the annex) is recorded, and
   instances whose ``htcondor:LeaseEnd`` tag differs are tagged again (an ``extend`` that died
   between its tags and its schedule);
6. **stop replacing** after K consecutive never-joined nodes in an annex (ParallelCluster's
   protected mode);
7. **autoscale** demand-driven annexes (:mod:`condor_annex.reconciler.autoscale`).

Every transition the plan emits is an edge of :data:`condor_annex.state.lifecycle.TRANSITIONS`
(checked here, so a rule that breaks the table fails its test, not a pass).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from condor_annex.model import SPOT_INTERRUPTION_REASON
from condor_annex.reconciler.actions import (Action, AdoptInstance, EndAnnex, MarkLaunch,
                                             RecordInterruption, RecordTransition,
                                             RollBackLaunch, SaveConsole, StopLaunching,
                                             SyncLease, Terminate, WantReplacement)
from condor_annex.reconciler.autoscale import DEFAULT_SETTLE_S, autoscale_rules
from condor_annex.reconciler.budget import budget_rules
from condor_annex.reconciler.snapshot import Snapshot
from condor_annex.state import lifecycle
from condor_annex.state.lifecycle import TERMINAL, Lifecycle

L = Lifecycle

#: Default join deadline (seconds): ``--join-deadline`` / ``ANNEX_JOIN_DEADLINE``, 10 min.
DEFAULT_JOIN_DEADLINE_S = 600.0
#: Seconds an instance id returned by a launch may stay unlisted by EC2 (its listing lag)
#: before it is taken as never allocated.
DEFAULT_LAUNCH_GRACE_S = 180.0
#: Seconds of lease an annex must have left for an interrupted node to be replaced.
REPLACE_MIN_LEASE_S = 600.0
#: Consecutive never-joined nodes after which an annex stops launching replacements.
DEFAULT_NEVER_JOINED_LIMIT = 3


@dataclass(frozen=True)
class PlanSettings:
    """The planner's knobs.

    Attributes:
        join_deadline_s: seconds from an instance's launch time to its first startd ad, for
            annexes whose spec gives none (``join_deadline_s`` > 0 in the spec wins).
        launch_grace_s: see :data:`DEFAULT_LAUNCH_GRACE_S`.
        never_joined_limit: see :data:`DEFAULT_NEVER_JOINED_LIMIT` (>= 1).
        autoscale_settle_s: seconds demand must stay above capacity before an autoscaled
            annex grows (``ANNEX_AUTOSCALE_SETTLE``).
    """

    join_deadline_s: float = DEFAULT_JOIN_DEADLINE_S
    launch_grace_s: float = DEFAULT_LAUNCH_GRACE_S
    never_joined_limit: int = DEFAULT_NEVER_JOINED_LIMIT
    autoscale_settle_s: float = DEFAULT_SETTLE_S


def _age_s(now: datetime, since: datetime) -> float:
    return (now - since).total_seconds()


class _Pass:
    """The working state of one plan: actions so far and each instance's state after them."""

    def __init__(self, snapshot: Snapshot, now: datetime, settings: PlanSettings) -> None:
        self.snap = snapshot
        self.now = now
        self.settings = settings
        self.actions: list[Action] = []
        #: instance id -> lifecycle state once this pass's recorded transitions apply.
        self.state: dict[str, Lifecycle] = {}
        self.ending: set[str] = set()
        #: annex -> join outcomes decided in this pass (True joined, False never joined).
        self.outcomes: dict[str, list[bool]] = defaultdict(list)

    def record(self, iid: str, to: Lifecycle, reason: str) -> None:
        current = self.state[iid]
        lifecycle.check(iid, current, to)
        self.actions.append(RecordTransition(iid, current, to, reason))
        self.state[iid] = to


def plan(snapshot: Snapshot, now: datetime,
         settings: PlanSettings = PlanSettings()) -> list[Action]:
    """Decide one pass's actions.

    Args:
        snapshot: what the pass observed (cloud, pool, store).
        now: the pass's time (aware UTC).
        settings: deadlines and limits.

    Returns:
        actions in the order the executor performs them (an instance's :class:`SaveConsole`
        before its :class:`Terminate`).

    Raises:
        condor_annex.state.lifecycle.TransitionError: a rule produced an edge that is not in
            the transitions table (a bug in this module).
    """
    p = _Pass(snapshot, now, settings)
    _record_seen(p)
    _interruptions(p)
    _adopt(p)
    _end_annexes(p)
    p.actions += budget_rules(p.snap, p.now, p.ending)   # issue 12: --budget
    _never_joined(p)
    _job_deadline(p)
    _retry_terminate(p)
    _launch_requests(p)
    _sync_leases(p)
    _stop_launching(p)
    p.actions += autoscale_rules(p.snap, p.now, p.state, p.ending, p.actions,
                                 p.settings.autoscale_settle_s)   # issue 13
    return p.actions


def _record_seen(p: _Pass) -> None:
    """Rule 1: move each instance the store knows to the state EC2 and the collector show."""
    grace = p.settings.launch_grace_s
    for iid, rec in p.snap.store.instances.items():
        current = Lifecycle(rec.state)
        p.state[iid] = current
        if current in TERMINAL:
            continue
        seen = p.snap.instances.get(iid)
        if seen is None:
            if current is L.REQUESTED:
                if _age_s(p.now, rec.since) >= grace:
                    p.record(iid, L.ALLOCATION_FAILED,
                             f"not listed by EC2 {grace:.0f} s after its launch")
            else:
                # DescribeInstances lists terminated instances for about an hour: an instance
                # it no longer lists at all is long gone.
                p.record(iid, L.TERMINATED, "no longer listed by EC2")
            continue
        ec2 = lifecycle.from_ec2_state(seen.ec2_state)
        if ec2 is L.ALLOCATED:
            if current is L.REQUESTED:
                p.record(iid, L.ALLOCATED, f"EC2 lists it {seen.ec2_state}")
            if _ads(p, iid) > 0 and p.state[iid] in (L.ALLOCATED, L.NEVER_JOINED):
                p.record(iid, L.JOINED, "its startd ad is in the collector")
                p.outcomes[rec.annex].append(True)
        elif ec2 is L.TERMINATING:
            if current is not L.TERMINATING:
                p.record(iid, L.TERMINATING, f"EC2 lists it {seen.ec2_state}")
        elif current is L.REQUESTED:
            p.record(iid, L.TERMINATED, "EC2 lists it terminated (it ended before a pass saw "
                                        "it running)")
        else:
            p.record(iid, L.TERMINATED, "EC2 lists it terminated")


def _interruptions(p: _Pass) -> None:
    """Rule 1c: an instance of a live annex that EC2 ended by a spot interruption
    (``StateReason`` ``Server.SpotInstanceTermination``), or whose startd ad says it drains
    after the interruption notice (``AnnexInterruption``: a node that powered itself off
    within the notice may carry its own shutdown as state reason), is recorded once."""
    for iid, seen in p.snap.instances.items():
        if (seen.state_reason != SPOT_INTERRUPTION_REASON and iid not in p.snap.interrupting) \
                or iid in p.snap.store.interrupted or seen.annex not in p.snap.store.annexes:
            continue
        p.actions.append(RecordInterruption(
            iid, seen.annex, seen.instance_type,
            f"spot interruption ({seen.instance_type or 'instance'}): EC2 reclaimed it"))
        annex = p.snap.store.annexes[seen.annex]
        end = (p.snap.leases or {}).get(seen.annex, annex.lease_end)
        if annex.launch_stopped or annex.off_requested_at is not None or end is None \
                or _age_s(end, p.now) < REPLACE_MIN_LEASE_S:
            continue   # no growth (budget, protected mode), ending, or too close to the end
        p.actions.append(WantReplacement(
            iid, seen.annex, seen.instance_type,
            f"replaces {iid}, interrupted ({seen.instance_type or 'instance'})"))


def _adopt(p: _Pass) -> None:
    """Rule 1b: an instance listed with the client token of a launch request of a live annex,
    unknown to the store (the command died after its launch call), is recorded."""
    tokens = {r.client_token: r.annex for r in p.snap.store.launch_requests}
    for iid, seen in p.snap.instances.items():
        if iid in p.state or tokens.get(seen.launch_token) != seen.annex \
                or seen.annex not in p.snap.store.annexes:
            continue
        state = lifecycle.from_ec2_state(seen.ec2_state)
        if state is L.TERMINATED:
            continue   # nothing to follow; it never served
        p.actions.append(AdoptInstance(iid, seen.annex, seen.launch_token, state,
                                       f"listed by EC2 with launch token {seen.launch_token}"))
        p.state[iid] = state
        if state is L.ALLOCATED and _ads(p, iid) > 0:
            p.record(iid, L.JOINED, "its startd ad is in the collector")


def _ads(p: _Pass, iid: str) -> int:
    """Startd ads carrying the instance (0 when the collector was not read this pass)."""
    return (p.snap.startd_ads or {}).get(iid, 0)


def _end_annexes(p: _Pass) -> None:
    """Rule 2: an annex whose lease end passed, whose lease is gone from the cloud, or whose
    ``off`` died part-way, ends.  Annexes a live command holds are left to it."""
    leases = p.snap.leases
    for name, annex in p.snap.store.annexes.items():
        if name in p.snap.busy:
            continue
        if annex.off_requested_at is not None:
            p.ending.add(name)
            p.actions.append(EndAnnex(name, "an off of this annex stopped part-way; finishing "
                                            "it"))
            continue
        if leases is not None and name not in leases:
            p.ending.add(name)
            p.actions.append(EndAnnex(name, "its lease is gone (ended by off elsewhere, by the "
                                            "lease enforcer, or a create that died before "
                                            "making it)", if_lease_gone=True))
            continue
        end = leases[name] if leases is not None else annex.lease_end
        if end is not None and end <= p.now:
            p.ending.add(name)
            p.actions.append(EndAnnex(name, f"its lease ended at {end:%Y-%m-%d %H:%M:%S} UTC"))


def _never_joined(p: _Pass) -> None:
    """Rule 3: alive past the join deadline without a startd ad: record NEVER_JOINED, save
    the console, then terminate (one TerminateInstances per annex)."""
    if p.snap.startd_ads is None:
        return   # the collector was not read: absence of an ad proves nothing this pass
    doomed: dict[str, list[str]] = defaultdict(list)
    for iid, seen in p.snap.instances.items():
        state = p.state.get(iid)
        if state not in (L.ALLOCATED, L.NEVER_JOINED) or seen.annex in p.ending \
                or _ads(p, iid) > 0:
            continue
        deadline = _join_deadline_s(p, seen.annex)
        if _age_s(p.now, seen.launch_time) < deadline:
            continue
        reason = (f"never joined: no startd ad {deadline:.0f} s after launch; see "
                  f"condor_annex logs {seen.annex} {iid}")
        if state is L.ALLOCATED:
            p.record(iid, L.NEVER_JOINED, reason)
            p.outcomes[seen.annex].append(False)
        # Also for one already NEVER_JOINED: an earlier pass died before its terminate.
        p.actions.append(SaveConsole(iid, seen.annex, reason))
        doomed[seen.annex].append(iid)
    for annex, iids in doomed.items():
        p.actions.append(Terminate(tuple(sorted(iids)), annex, "never joined"))


def _job_deadline(p: _Pass) -> None:
    """Rule 3c: a node in the pool longer than its annex's first-job deadline
    (``--job-deadline``, off by default) on which no job ever started is ended: it bills and
    serves nobody (a START expression no job matches, a queue that moved elsewhere)."""
    if p.snap.worked is None:
        return
    doomed: dict[str, list[str]] = defaultdict(list)
    for iid, rec in p.snap.store.instances.items():
        annex = p.snap.store.annexes.get(rec.annex)
        deadline = annex.spec.get("job_deadline_s") if annex is not None else None
        if not isinstance(deadline, (int, float)) or deadline <= 0 or rec.annex in p.ending:
            continue
        if p.state.get(iid) is not L.JOINED or Lifecycle(rec.state) is not L.JOINED:
            continue   # joined only this pass: its time starts now
        if iid in p.snap.worked or _age_s(p.now, rec.since) < deadline:
            continue
        p.record(iid, L.TERMINATING, f"no job ran on it in the {deadline:.0f} s since it "
                                     "joined the pool (--job-deadline)")
        doomed[rec.annex].append(iid)
    for annex_name, iids in doomed.items():
        p.actions.append(Terminate(tuple(sorted(iids)), annex_name, "no job ran on it"))


def _join_deadline_s(p: _Pass, annex: str) -> float:
    """The annex's join deadline: its spec's ``join_deadline_s`` (``--join-deadline``) when
    positive, else the setting (``ANNEX_JOIN_DEADLINE``, default 10 min)."""
    record = p.snap.store.annexes.get(annex)
    own = record.spec.get("join_deadline_s") if record is not None else None
    return float(own) if isinstance(own, (int, float)) and own > 0 \
        else p.settings.join_deadline_s


def _retry_terminate(p: _Pass) -> None:
    """Rule 3b: a TerminateInstances that failed on an earlier pass is sent again."""
    retry: dict[str, list[str]] = defaultdict(list)
    for iid, state in p.state.items():
        annex = p.snap.store.instances[iid].annex if iid in p.snap.store.instances else ""
        if state is L.TERMINATION_FAILED and annex not in p.ending:
            retry[annex].append(iid)
    for annex, iids in retry.items():
        p.actions.append(Terminate(tuple(sorted(iids)), annex,
                                   "terminate failed on an earlier pass; sent again"))


def _launch_requests(p: _Pass) -> None:
    """Rule 4: unfinished launch requests of annexes no live command holds (the command died
    during its launch call): marked launched when something with the token is listed, else
    rolled back; an annex left with nothing launched is ended."""
    seen_tokens = {i.launch_token for i in p.snap.instances.values()}
    seen_tokens |= {f.launch_token for f in p.snap.fleets.values()}
    rolled: set[str] = set()
    for req in p.snap.store.launch_requests:
        if req.state not in ("recorded", "resuming") or req.annex in p.snap.busy:
            continue
        if req.client_token in seen_tokens:
            p.actions.append(MarkLaunch(req.client_token, "launched",
                                        "instances or a fleet with its client token are listed"))
            continue
        annex = p.snap.store.annexes.get(req.annex)
        why = ("its annex ended" if annex is None or req.annex in p.ending
               else f"launching stopped: {annex.launch_stopped}" if annex.launch_stopped
               else "the command that made it ended before its launch call returned, and "
                    "nothing with its client token is listed")
        p.actions.append(RollBackLaunch(req.client_token, req.annex, why))
        rolled.add(req.annex)
    for name in sorted(rolled - p.ending):
        if _launched_anything(p, name):
            continue
        p.ending.add(name)
        p.actions.append(EndAnnex(name, "its create stopped before anything was launched; "
                                        "what it made (lease, bundle, role) is removed"))


def _launched_anything(p: _Pass, name: str) -> bool:
    """True when the annex has a launch request that launched, or an instance alive."""
    if any(r.annex == name and r.state == "launched" for r in p.snap.store.launch_requests):
        return True
    if any(i.annex == name and lifecycle.from_ec2_state(i.ec2_state) is not L.TERMINATED
           for i in p.snap.instances.values()):
        return True
    return any(r.annex == name and p.state.get(iid) not in TERMINAL
               for iid, r in p.snap.store.instances.items())


def _sync_leases(p: _Pass) -> None:
    """Rule 5: the store and the instances' ``htcondor:LeaseEnd`` tags follow the lease the
    cloud holds (its schedule is what ends the annex)."""
    if p.snap.leases is None:
        return
    for name, annex in p.snap.store.annexes.items():
        end = p.snap.leases.get(name)
        if end is None or name in p.ending or name in p.snap.busy:
            continue
        retag = any(i.annex == name and i.lease_end is not None
                    and abs((i.lease_end - end).total_seconds()) > 1
                    and lifecycle.from_ec2_state(i.ec2_state) is L.ALLOCATED
                    for i in p.snap.instances.values())
        stale = annex.lease_end is None or abs((annex.lease_end - end).total_seconds()) > 1
        if retag or stale:
            p.actions.append(SyncLease(name, end, retag,
                                       "instances carry another lease end than the lease "
                                       "(an extend stopped part-way)" if retag
                                       else "the store's lease end differs from the lease's"))


def _stop_launching(p: _Pass) -> None:
    """Rule 5: after K never-joined nodes in a row, the annex stops launching replacements.
    Within one pass, joins are counted before never-joined nodes (the lenient order)."""
    limit = p.settings.never_joined_limit
    for name, annex in p.snap.store.annexes.items():
        if annex.launch_stopped or name in p.ending:
            continue
        new = p.outcomes.get(name, [])
        if False not in new:
            continue   # only a pass that saw a node miss its deadline can start protection
        history = list(p.snap.store.join_outcomes.get(name, ())) + sorted(new, reverse=True)
        streak = 0
        for joined in reversed(history):
            if joined:
                break
            streak += 1
        if streak >= limit:
            p.actions.append(StopLaunching(
                name, f"{streak} nodes in a row never joined the pool; no replacements are "
                      f"launched (see condor_annex logs {name})"))
