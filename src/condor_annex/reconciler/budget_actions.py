"""The budget rules' own actions (issue 12 item 5): the planner's output for
:mod:`condor_annex.reconciler.budget`, performed by :func:`perform` (which the executor,
:mod:`condor_annex.reconciler.execute`, calls under the annex's lock).

* :class:`DrainForBudget`: the annex's spend plus one minute of its rate reached its budget:
  its nodes in the pool are asked to leave it gracefully, as ``off`` asks them (EC2 CreateTags
  ``htcondor:AnnexOff``: each agent shuts HTCondor down so running jobs go back to the queue,
  then powers off), those not in the pool (they run no job) are terminated at once, growth
  stops, and the drain is recorded in the annex's spec (key :data:`DRAIN_KEY`) so the next
  passes end the annex once its nodes left, or at the latest when the budget is reached;
* :class:`RecordBudgetSpend`: instances of the annex ended: what each cost is kept in the spec
  (key :data:`ENDED_KEY`, instance id -> USD) and the total goes into tag ``htcondor:Budget``
  of its live instances (``spent=<USD>``), where the lease sweep's backstop finds it once EC2
  stops listing the ended instances (about an hour after they end);
* :class:`ResumeLaunching`: the projection to the lease end fits the budget again (a budget
  raised by ``extend --budget``, instances ended): the budget's growth stop is lifted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from condor_annex.model import TAG_BUDGET
from condor_annex.providers.base import Provider
from condor_annex.state.lifecycle import Lifecycle
from condor_annex.state.store import Store

#: The annex spec's key recording a budget drain: {"at": ISO 8601 UTC, "reason": str}.
DRAIN_KEY = "budget_drain"
#: The annex spec's key of the cost of its ended instances: {instance id: USD}.
ENDED_KEY = "budget_ended_usd"
#: The annex spec's key of why the reconciler ended the annex (shown by ``status``).
ENDED_REASON_KEY = "ended_reason"


@dataclass(frozen=True)
class DrainForBudget:
    """Drain the annex because its budget is (nearly) spent; see the module docstring.

    Attributes:
        annex: the annex.
        drain: instances in the pool, asked to leave it (tag ``htcondor:AnnexOff``).
        terminate: instances not in the pool, terminated at once.
        reason: why, for people (starts with ``budget``).
        at: the pass's time (aware UTC): when the drain began.
    """

    annex: str
    drain: tuple[str, ...]
    terminate: tuple[str, ...]
    reason: str
    at: datetime


@dataclass(frozen=True)
class RecordBudgetSpend:
    """Keep the cost of the annex's ended instances (USD each) and tag its live instances with
    the total (tag ``htcondor:Budget`` = ``tag_value``, which ends with ``spent=<USD>``)."""

    annex: str
    ended_usd: tuple[tuple[str, float], ...]
    tag_value: str
    reason: str


@dataclass(frozen=True)
class ResumeLaunching:
    """Lift the budget's growth stop of the annex (its projection fits its budget again)."""

    annex: str
    reason: str


#: The actions of this module.
BUDGET_ACTIONS = (DrainForBudget, RecordBudgetSpend, ResumeLaunching)


def perform(action: Any, provider: Provider, store: Store,
            say: Callable[[str], None]) -> bool:
    """Perform one action of this module (the caller holds the annex's lock).

    Returns:
        True (done).

    Raises:
        ProviderError: a cloud call failed; nothing is recorded then, so the next pass plans
            the same action again (every step is idempotent).
    """
    if isinstance(action, DrainForBudget):
        if action.drain:
            provider.request_stop(list(action.drain), action.at)
        if action.terminate:
            provider.terminate(list(action.terminate))
            for iid in action.terminate:
                _terminating(store, iid, action.reason)
        store.stop_launching(action.annex, action.reason)
        store.update_spec(action.annex, {DRAIN_KEY: {"at": action.at.isoformat(),
                                                     "reason": action.reason}})
        say(f"annex {action.annex}: {len(action.drain)} node(s) asked to leave the pool, "
            f"{len(action.terminate)} not in it terminated: {action.reason}")
        return True
    if isinstance(action, RecordBudgetSpend):
        live = [iid for iid, i in provider.query_instances(action.annex).items() if i.alive]
        if live:
            provider.tag_instances(live, {TAG_BUDGET: action.tag_value})
        store.update_spec(action.annex, {ENDED_KEY: dict(action.ended_usd)})
        return True
    if isinstance(action, ResumeLaunching):
        store.stop_launching(action.annex, "")
        say(f"annex {action.annex}: launching resumed: {action.reason}")
        return True
    raise TypeError(f"not a budget action: {action!r}")


def _terminating(store: Store, iid: str, reason: str) -> None:
    """Record TERMINATING when the store knows the instance in a state that may move there."""
    from condor_annex.state import lifecycle
    try:
        lifecycle.transition(store, iid, Lifecycle.TERMINATING, reason)
    except lifecycle.TransitionError:
        pass   # unknown to the store, or already past this state
