"""What one reconciler pass observes: the cloud (instances, fleets, leases), the pool (startd
ads per instance) and the store's view.  Plain frozen data, built by the observe step and read
by the pure planner (:mod:`condor_annex.reconciler.plan`).

Times are aware UTC datetimes; counts are instances or weighted capacity units.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from condor_annex.state.autoscale_record import AutoscaleRecord
from condor_annex.state.records import AnnexRecord, InstanceRecord, LaunchRecord


@dataclass(frozen=True)
class SeenInstance:
    """An instance listed by DescribeInstances with our annex tags.

    Attributes:
        instance_id: EC2's id.
        annex: its ``htcondor:AnnexName`` tag.
        ec2_state: ``State.Name`` (pending, running, shutting-down, terminated, ...).
        launch_time: ``LaunchTime`` (aware UTC).
        launch_token: the client token tag of the launch that made it ("" if absent).
        lease_end: its ``htcondor:LeaseEnd`` tag (aware UTC), or None when absent.
        instance_type: ``InstanceType`` ("" when not known).
        state_reason: EC2 ``StateReason.Code`` ("" when none).
    """

    instance_id: str
    annex: str
    ec2_state: str
    launch_time: datetime
    launch_token: str = ""
    lease_end: datetime | None = None
    instance_type: str = ""
    state_reason: str = ""


@dataclass(frozen=True)
class SeenFleet:
    """A fleet (EC2 Fleet ``fleet-...`` or Spot Fleet ``sfr-...``) with our annex tags.

    Attributes:
        fleet_id: its id.
        annex: its annex.
        launch_token: the client token it was requested with ("" if unknown).
        state: its state as the API names it (``active``, ``submitted``, ``cancelled_running``...).
    """

    fleet_id: str
    annex: str
    launch_token: str
    state: str


@dataclass(frozen=True)
class StoreView:
    """The store's rows as read at the start of the pass.

    Attributes:
        annexes: live annexes (not ended), by name.
        launch_requests: the launch requests of the live annexes, oldest first.
        instances: the instances of the live annexes by id (terminal ones too, so an instance
            EC2 still lists after it ended is not taken for a new one).
        join_outcomes: per annex, whether each of its instances that finished trying to join
            joined (True) or never joined (False), oldest first (from the transitions).
        interrupted: instances whose spot interruption is recorded already.
        autoscale: the demand-driven annexes' rows (issue 13), by annex.
    """

    annexes: Mapping[str, AnnexRecord] = field(default_factory=dict)
    launch_requests: tuple[LaunchRecord, ...] = ()
    instances: Mapping[str, InstanceRecord] = field(default_factory=dict)
    join_outcomes: Mapping[str, tuple[bool, ...]] = field(default_factory=dict)
    interrupted: frozenset[str] = frozenset()
    autoscale: Mapping[str, AutoscaleRecord] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """Everything one pass observed.

    Attributes:
        instances: instances with our tags by id (one DescribeInstances, all annexes).
        startd_ads: instance id -> number of startd ads in the collector carrying it (an
            instance with no ad is absent), or None when the collector could not be asked
            this pass (no instance is then judged by its ads: never-joined waits).
        leases: annex -> lease end (aware UTC) as the cloud holds it, or None when the leases
            could not be read this pass (rules needing them are skipped, never guessed).
        fleets: fleets with our tags by id.
        store: the store's view.
        worked: instances with a slot that runs or has run a job (claimed, or ``JobStarts`` >
            0), or None when the collector was not read this pass.
        interrupting: instances whose startd ad says ``AnnexInterruption`` (draining after
            EC2's spot interruption notice).
        busy: annexes whose lock a live command holds (:mod:`condor_annex.state.locks`): what
            the store shows unfinished for them is still in flight and is left alone; for
            every other annex it was left by a command that died.
        demand: annex -> idle jobs that could run on it (:mod:`condor_annex.pool.demand`), or
            None when they were not counted this pass (no autoscaled annex, or the pool did
            not answer: ``demand_holding`` says why).
        demand_holding: why demand is not usable this pass, e.g. "schedd X did not answer"
            ("" when it is): the autoscale rule then holds every autoscaled annex's size.
        free_cpus: annex -> cores of its unclaimed slots in the collector, or None when the
            collector was not read.
    """

    instances: Mapping[str, SeenInstance] = field(default_factory=dict)
    startd_ads: Mapping[str, int] | None = field(default_factory=dict)
    leases: Mapping[str, datetime] | None = None
    fleets: Mapping[str, SeenFleet] = field(default_factory=dict)
    store: StoreView = field(default_factory=StoreView)
    busy: frozenset[str] = frozenset()
    worked: frozenset[str] | None = None
    interrupting: frozenset[str] = frozenset()
    demand: Mapping[str, int] | None = None
    demand_holding: str = ""
    free_cpus: Mapping[str, int] | None = None
