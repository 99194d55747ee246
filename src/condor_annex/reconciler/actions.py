"""What a reconciler pass decided to do: the planner's output, the executor's input.

Each action is a frozen dataclass carrying a ``reason`` for people (it ends up in the store's
transition history and in ``status``).  The executor performs them in list order; an action
that fails stops the later actions on the same instance or launch request only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from condor_annex.reconciler.autoscale_action import SetAutoscale
from condor_annex.reconciler.budget_actions import (DrainForBudget, RecordBudgetSpend,
                                                    ResumeLaunching)
from condor_annex.state.lifecycle import Lifecycle


@dataclass(frozen=True)
class RecordTransition:
    """Record a lifecycle change the pass observed (no cloud call)."""

    instance_id: str
    from_state: Lifecycle
    to_state: Lifecycle
    reason: str


@dataclass(frozen=True)
class AdoptInstance:
    """Record an instance the cloud lists with our tags but the store does not know, whose
    annex and launch request the store knows (a command killed after its launch call)."""

    instance_id: str
    annex: str
    launch_token: str
    state: Lifecycle
    reason: str


@dataclass(frozen=True)
class SaveConsole:
    """Save the instance's console output (EC2 GetConsoleOutput) before it is terminated, so
    ``condor_annex logs`` can still show why it never joined."""

    instance_id: str
    annex: str
    reason: str


@dataclass(frozen=True)
class Terminate:
    """Terminate instances (EC2 TerminateInstances); on success the executor records each as
    TERMINATING with ``reason``, on failure as TERMINATION_FAILED."""

    instance_ids: tuple[str, ...]
    annex: str
    reason: str


@dataclass(frozen=True)
class EndAnnex:
    """End the whole annex (as ``off`` without grace: fleets, instances, launch template,
    bundle, role, lease) and mark it ended in the store.  With ``if_lease_gone`` the executor
    first asks for the lease by name (Scheduler GetSchedule, which does not lag as a listing
    may) and does nothing when it exists."""

    annex: str
    reason: str
    if_lease_gone: bool = False


@dataclass(frozen=True)
class MarkLaunch:
    """Move a launch request to a state (``launched`` once instances or a fleet carrying its
    token are seen)."""

    client_token: str
    state: str
    reason: str


@dataclass(frozen=True)
class RollBackLaunch:
    """End what carries the launch request's client token (fleets, instances) and mark it
    ``rolled-back``."""

    client_token: str
    annex: str
    reason: str


@dataclass(frozen=True)
class SyncLease:
    """Make the store and the instances agree with the lease the cloud holds (its schedule is
    what ends the annex): record ``lease_end`` in the store and, with ``retag``, rewrite tag
    ``htcondor:LeaseEnd`` on the annex's live instances and fleets (an ``extend`` that died
    between its tags and its schedule)."""

    annex: str
    lease_end: datetime
    retag: bool
    reason: str


@dataclass(frozen=True)
class RecordInterruption:
    """Record that EC2 ended a spot instance by an interruption (``StateReason``
    ``Server.SpotInstanceTermination``), for ``status`` and for replacing the capacity."""

    instance_id: str
    annex: str
    instance_type: str
    reason: str


@dataclass(frozen=True)
class WantReplacement:
    """Record that an interrupted instance's capacity is to be replaced; the service launches
    it after the pass (:mod:`condor_annex.service.replace`), within the annex's lease."""

    instance_id: str
    annex: str
    instance_type: str
    reason: str


@dataclass(frozen=True)
class StopLaunching:
    """Stop launching replacements for the annex (ParallelCluster's protected mode) and record
    why in the store, for ``status`` and ``list``."""

    annex: str
    reason: str


#: Any action.
Action = (RecordTransition | AdoptInstance | SaveConsole | Terminate | EndAnnex | MarkLaunch
          | RollBackLaunch | SyncLease | RecordInterruption | WantReplacement
          | StopLaunching | SetAutoscale | DrainForBudget | RecordBudgetSpend
          | ResumeLaunching)
