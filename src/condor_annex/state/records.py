"""Rows of the state store as frozen dataclasses (what :mod:`condor_annex.state.store` returns
and what a reconciler snapshot holds).  Pure data: no I/O, importable by the pure planner.

Times are aware UTC datetimes (the store keeps them as Unix seconds); sizes are instance counts
or, for a fleet, weighted capacity units.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: Launch request kinds: one RunInstances, an EC2 Fleet (CreateFleet) or a Spot Fleet
#: (RequestSpotFleet); the fleet kinds are :data:`condor_annex.model.SPOT_API_EC2_FLEET` and
#: :data:`~condor_annex.model.SPOT_API_SPOT_FLEET`.
LAUNCH_KINDS = ("on-demand", "ec2-fleet", "spot-fleet")

#: Launch request states.  ``recorded`` is written before the cloud call; the call's outcome
#: moves it to ``launched`` or ``failed``; a reconciler pass that finds a request still
#: ``recorded`` after a grace (the CLI died during the call) re-issues it with the same client
#: token (``resuming``) or ends what carries the token (``rolled-back``).
LAUNCH_STATES = ("recorded", "launched", "failed", "resuming", "rolled-back")


@dataclass(frozen=True)
class AnnexRecord:
    """An annex's desired state.

    Attributes:
        name: the annex name.
        spec: what the user asked for, JSON-ready (instance type, image, lease and idle
            seconds, owners, tags, subnets, ...; never user data or a token).
        requested: instances (or weighted capacity) asked for, summed over creates.
        lease_end: when the lease ends (aware UTC), or None before the lease is known.
        created_at: first create (aware UTC).
        ended_at: when ``off`` or the reconciler ended it, or None while it lives.
        launch_stopped: why launching replacements stopped (e.g. "3 nodes in a row never
            joined"), or "" while launches go on.
        off_requested_at: when an ``off`` started ending it (aware UTC), or None: the desired
            state is then "ended", and a pass finishes an ``off`` that died part-way.
    """

    name: str
    spec: dict[str, Any]
    requested: int
    lease_end: datetime | None
    created_at: datetime
    ended_at: datetime | None = None
    launch_stopped: str = ""
    off_requested_at: datetime | None = None


@dataclass(frozen=True)
class LaunchRecord:
    """A launch request, keyed by its client token (EC2's idempotency key, ``<annex>_<uuid>``).

    Attributes:
        client_token: the token sent with RunInstances / CreateFleet / RequestSpotFleet.
        annex: the annex it launches for.
        kind: one of :data:`LAUNCH_KINDS`.
        count: instances (on-demand) or weighted capacity (fleets).
        state: one of :data:`LAUNCH_STATES`.
        created_at: when it was recorded, before the cloud call (aware UTC).
        updated_at: its last state change (aware UTC).
    """

    client_token: str
    annex: str
    kind: str
    count: int
    state: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class InstanceRecord:
    """An instance as the store knows it.

    Attributes:
        instance_id: EC2's id (``i-...``).
        annex: its annex.
        launch_token: the client token of the launch request that made it ("" if unknown).
        state: its lifecycle state's value (:class:`condor_annex.state.lifecycle.Lifecycle`).
        since: when it entered that state (aware UTC).
    """

    instance_id: str
    annex: str
    launch_token: str
    state: str
    since: datetime


@dataclass(frozen=True)
class TransitionRecord:
    """One lifecycle transition of an instance.

    Attributes:
        instance_id: EC2's id.
        from_state: the state left ("" for the instance's first record).
        to_state: the state entered.
        at: when (aware UTC).
        reason: why, for people (e.g. "never joined: no startd ad 600 s after launch").
    """

    instance_id: str
    from_state: str
    to_state: str
    at: datetime
    reason: str


@dataclass(frozen=True)
class SavedLog:
    """An instance's console output saved before the reconciler terminated it.

    Attributes:
        instance_id: EC2's id.
        annex: its annex.
        at: when it was saved (aware UTC).
        console: the GetConsoleOutput text ("" when EC2 had none).
        agent_log: the agent's own log uploaded to the bucket on a failed boot ("" if none).
    """

    instance_id: str
    annex: str
    at: datetime
    console: str
    agent_log: str = ""
