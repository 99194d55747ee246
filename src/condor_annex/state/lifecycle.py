"""The instance lifecycle: one state machine, written once as :data:`TRANSITIONS` (after Ray
autoscaler v2's ``instance_manager/common.py``), used by every caller.

An instance's lifecycle state is ours, not EC2's: EC2 knows ``pending``/``running``, not whether
the startd joined the pool.  EC2's state names map to lifecycle states in
:func:`from_ec2_state` only (EC2 instance states:
https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-instance-lifecycle.html).  Every change
goes through :func:`transition`, which refuses an edge that is not in the table and records the
change with its time and reason in the store.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING

from condor_annex.errors import AnnexError

if TYPE_CHECKING:
    from condor_annex.state.store import Store


class Lifecycle(str, Enum):
    """An instance's lifecycle state (the value is what the store holds)."""

    #: The launch call returned the instance's id; EC2 has not listed it yet (listings lag).
    REQUESTED = "requested"
    #: EC2 lists it pending or running: it exists and bills, but no startd ad is seen yet.
    ALLOCATED = "allocated"
    #: A startd ad carrying its instance id is in the collector: it serves the pool.
    JOINED = "joined"
    #: The join deadline passed without a startd ad; its console is saved, then it is ended.
    NEVER_JOINED = "never-joined"
    #: Asked to leave the pool (``off``'s graceful leave, lease end): HTCondor shuts down.
    DRAINING = "draining"
    #: TerminateInstances was sent, or EC2 shows it shutting down.
    TERMINATING = "terminating"
    #: TerminateInstances failed (e.g. UnauthorizedOperation); retried on the next pass.
    TERMINATION_FAILED = "termination-failed"
    #: EC2 shows it terminated, or no longer lists it.  Terminal.
    TERMINATED = "terminated"
    #: Its id was returned but it never ran for us (ended before we saw it, or never listed).
    #: Terminal.
    ALLOCATION_FAILED = "allocation-failed"


L = Lifecycle

#: The only allowed transitions: state -> the states it may move to, with why (one comment per
#: edge).  An instance enters the store as REQUESTED (its id returned by a launch) or, found by
#: a pass, in the state :func:`from_ec2_state` gives; a state with an empty set is terminal.
TRANSITIONS: dict[Lifecycle, frozenset[Lifecycle]] = {
    L.REQUESTED: frozenset({
        L.ALLOCATED,           # EC2 lists it pending or running
        L.ALLOCATION_FAILED,   # EC2 never lists it, within the launch grace
        L.TERMINATING,         # off / a rollback terminated it before it was listed
        L.TERMINATED,          # EC2 lists it terminated: it ran and ended between two passes
                               # (without annexd, passes run only with commands)
    }),
    L.ALLOCATED: frozenset({
        L.JOINED,              # a startd ad with its instance id is in the collector
        L.NEVER_JOINED,        # running past the join deadline without a startd ad
        L.TERMINATING,         # off, lease end or a rollback terminated it; or EC2 shutting-down
        L.TERMINATED,          # EC2 lists it terminated (Spot reclaimed, powered off by itself)
    }),
    L.JOINED: frozenset({
        L.DRAINING,            # asked to leave the pool (off's graceful leave, lease end)
        L.TERMINATING,         # terminated without a graceful leave; or EC2 shutting-down
                               # (the agent powered it off after an idle shutdown)
        L.TERMINATED,          # EC2 lists it terminated between two passes
    }),
    L.NEVER_JOINED: frozenset({
        L.JOINED,              # its ad arrived before the terminate was sent: it is kept
        L.TERMINATING,         # console saved, TerminateInstances sent
        L.TERMINATED,          # EC2 lists it terminated (it powered itself off after a failure)
    }),
    L.DRAINING: frozenset({
        L.TERMINATING,         # left the pool and powered off (shutting-down), or grace passed
        L.TERMINATED,          # EC2 lists it terminated between two passes
    }),
    L.TERMINATING: frozenset({
        L.TERMINATED,          # EC2 lists it terminated, or no longer lists it
        L.TERMINATION_FAILED,  # TerminateInstances returned an error
    }),
    L.TERMINATION_FAILED: frozenset({
        L.TERMINATING,         # the next pass sends TerminateInstances again
        L.TERMINATED,          # EC2 lists it terminated anyway (the lease enforcer ended it)
    }),
    L.TERMINATED: frozenset(),          # terminal
    L.ALLOCATION_FAILED: frozenset(),   # terminal
}

#: States from which nothing follows.
TERMINAL: frozenset[Lifecycle] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)


class TransitionError(AnnexError):
    """A lifecycle change that is not an edge of :data:`TRANSITIONS` (a bug in the caller),
    or of an instance the store does not know."""


def allowed(from_state: Lifecycle, to_state: Lifecycle) -> bool:
    """True when ``from_state -> to_state`` is an edge of :data:`TRANSITIONS`."""
    return to_state in TRANSITIONS[from_state]


def check(instance_id: str, from_state: Lifecycle, to_state: Lifecycle) -> None:
    """Refuse an edge not in the table.

    Raises:
        TransitionError: ``instance i-...: requested -> joined is not a lifecycle transition
            (from requested: allocated, allocation-failed, terminating)``.
    """
    if not allowed(from_state, to_state):
        nxt = ", ".join(sorted(s.value for s in TRANSITIONS[from_state])) or "nothing (terminal)"
        raise TransitionError(f"instance {instance_id}: {from_state.value} -> {to_state.value} "
                              f"is not a lifecycle transition (from {from_state.value}: {nxt})")


def transition(store: Store, instance_id: str, to: Lifecycle, reason: str, *,
               at: datetime | None = None) -> Lifecycle:
    """Move an instance to ``to``, checked against :data:`TRANSITIONS`, recorded in the store
    with ``reason`` and the time, in one transaction (compare-and-swap on the state read).

    Args:
        store: the state store.
        instance_id: EC2's id.
        to: the new state.
        reason: why, for people ("never joined: no startd ad 600 s after launch").
        at: when (aware UTC); default now.

    Returns:
        the state it left.

    Raises:
        TransitionError: the store does not know the instance, or the edge is not in the table.
        condor_annex.state.store.StaleStateError: another writer changed its state meanwhile.
    """
    record = store.instance(instance_id)
    if record is None:
        raise TransitionError(f"instance {instance_id}: not in the state store")
    current = Lifecycle(record.state)
    check(instance_id, current, to)
    store.set_instance_state(instance_id, expected=current.value, to=to.value, reason=reason,
                             at=at)
    return current


#: EC2 instance state name -> lifecycle state (the one place EC2's names are read).
_FROM_EC2: dict[str, Lifecycle] = {
    "pending": L.ALLOCATED,        # capacity found, booting: it bills from ``running`` on
    "running": L.ALLOCATED,        # JOINED is decided by the collector, not by EC2
    "shutting-down": L.TERMINATING,
    # Annex instances are launched with InstanceInitiatedShutdownBehavior=terminate, so a stop
    # comes from outside (console, API); a stopped annex instance serves nobody and is ended.
    "stopping": L.TERMINATING,
    "stopped": L.TERMINATING,
    "terminated": L.TERMINATED,
}


def from_ec2_state(name: str) -> Lifecycle:
    """The lifecycle state an EC2 instance state name implies, before the pool is considered
    (``running`` gives ALLOCATED; the planner makes it JOINED when a startd ad is seen).

    Args:
        name: DescribeInstances ``State.Name`` (pending, running, shutting-down, terminated,
            stopping, stopped).

    Raises:
        ValueError: a name EC2 does not document.
    """
    try:
        return _FROM_EC2[name]
    except KeyError:
        raise ValueError(f"unknown EC2 instance state {name!r}") from None
