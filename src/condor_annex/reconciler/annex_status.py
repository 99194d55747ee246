"""One annex as the cloud and the pool see it: :class:`AnnexStatus`, built by
:func:`join_status` from one DescribeInstances listing and the collector's slot ads (pure, no
I/O).  ``status`` builds it from live calls; a reconciler pass builds the same and keeps it in
the store, so ``status`` can answer from the store while annexd runs (issue 11).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from condor_annex.model import CloudInstance, utcnow
from condor_annex.pool.collector import SlotAd
from condor_annex.reconciler.cost import AnnexCost


@dataclass
class AnnexStatus:
    """One annex as the cloud and the pool see it.

    Attributes:
        name: annex name.
        requested: instances ever launched and still listed (any state).
        running: instances pending or running.
        joined: running instances with at least one slot in the collector.
        idle_slots / busy_slots: slots of running instances by activity.
        lease_expires_at: aware UTC datetime, or None when the annex has no lease.
        states: EC2 state name -> instances.
        not_joined: ids of running instances with no slot in the collector.
        lifecycle: lifecycle state -> instances, as the state store holds them (empty when
            the store does not know the annex).
        reasons: instance id -> why it is in its lifecycle state, for instances that did not
            join or were ended by the reconciler (e.g. "never joined: ...").
        interruptions: the annex's instances EC2 ended by a spot interruption (from the store).
        replacements: replacements of interrupted capacity launched (from the store).
        autoscale: a demand-driven annex's ``min``, ``max``, ``demand`` (idle jobs that could
            run on it; None: not counted), ``target`` and ``why`` (issue 13), else None.
        as_of: when the reconciler observed this (status from the store), or None when it
            was read from the cloud just now.
        usd_per_hour: the annex's rate now, USD per hour (:mod:`condor_annex.reconciler.cost`),
            or None when a running instance's price is unknown (shown as "?", never 0).
        usd_spent: what it has cost so far, USD, or None when unknown.
        instances: one row per instance: ``instance_id``, ``ec2_state``, ``lifecycle`` (the
            store's state, "" when it has none), ``market`` ("spot"/"on-demand"),
            ``instance_type``, ``usd_per_hour`` (None: unknown).
        price_unknown: instance types no price source knows.
        price_snapshot_date: the shipped price snapshot's date when a price came from it,
            else "".
        end_reason: why the annex is ending or ended ("" when neither; e.g. its budget:
            :mod:`condor_annex.reconciler.end_reason`).
        budget_usd: its ``--budget``, USD, or None when it has none.
    """

    name: str
    requested: int = 0
    running: int = 0
    joined: int = 0
    idle_slots: int = 0
    busy_slots: int = 0
    lease_expires_at: datetime | None = None
    states: dict[str, int] = field(default_factory=dict)
    not_joined: list[str] = field(default_factory=list)
    lifecycle: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    as_of: datetime | None = None
    usd_per_hour: float | None = None
    usd_spent: float | None = None
    instances: list[dict[str, Any]] = field(default_factory=list)
    price_unknown: list[str] = field(default_factory=list)
    price_snapshot_date: str = ""
    interruptions: int = 0
    replacements: int = 0
    autoscale: dict[str, Any] | None = None
    end_reason: str = ""
    budget_usd: float | None = None

    def lease_seconds_left(self, now: datetime | None = None) -> float | None:
        """Seconds until the lease ends (negative when overdue), or None."""
        if self.lease_expires_at is None:
            return None
        return (self.lease_expires_at - (now or utcnow())).total_seconds()

    def as_dict(self) -> dict:
        """JSON-ready form (``--json``)."""
        left = self.lease_seconds_left()
        return {"name": self.name, "requested": self.requested, "running": self.running,
                "joined": self.joined, "idle_slots": self.idle_slots,
                "busy_slots": self.busy_slots,
                "lease_expires_at": self.lease_expires_at.isoformat()
                if self.lease_expires_at else None,
                "lease_seconds_left": None if left is None else round(left),
                "states": self.states, "not_joined": self.not_joined,
                "lifecycle": self.lifecycle, "reasons": self.reasons,
                "as_of": self.as_of.isoformat() if self.as_of else None,
                "usd_per_hour": _usd(self.usd_per_hour), "usd_spent": _usd(self.usd_spent),
                "instances": self.instances, "price_unknown": self.price_unknown,
                "price_snapshot_date": self.price_snapshot_date,
                "interruptions": self.interruptions, "replacements": self.replacements,
                "autoscale": self.autoscale,
                "end_reason": self.end_reason, "budget_usd": self.budget_usd}


def _usd(value: float | None) -> float | None:
    """Dollars rounded to a hundredth of a cent (None stays None: unknown)."""
    return None if value is None else round(value, 4)


def add_cost(st: AnnexStatus, cost: AnnexCost, lifecycle: dict[str, str] | None = None) -> None:
    """Fill ``st``'s cost fields from :func:`~condor_annex.reconciler.cost.annex_cost`'s answer;
    ``lifecycle`` maps instance ids to the store's lifecycle state."""
    lifecycle = lifecycle or {}
    st.usd_per_hour, st.usd_spent = cost.usd_per_hour, cost.usd_spent
    st.price_unknown = list(cost.unknown_types)
    st.price_snapshot_date = cost.snapshot_date
    st.instances = [{"instance_id": c.instance_id, "ec2_state": c.ec2_state,
                     "lifecycle": lifecycle.get(c.instance_id, ""), "market": c.market,
                     "instance_type": c.instance_type, "usd_per_hour": _usd(c.usd_per_hour)}
                    for c in cost.instances]


def join_status(instances: dict[str, CloudInstance], slots: list[SlotAd],
                name: str) -> AnnexStatus:
    """Join cloud state and collector ads for one annex (pure; no I/O).

    Slots whose ``EC2InstanceID`` is not a running instance are ignored: a hard-killed node
    leaves a stale ad in the collector for up to ~15 minutes.
    """
    st = AnnexStatus(name=name, requested=len(instances))
    running = {iid for iid, i in instances.items() if i.state in ("pending", "running")}
    for inst in instances.values():
        st.states[inst.state] = st.states.get(inst.state, 0) + 1
    joined: set[str] = set()
    for slot in slots:
        if slot.instance_id in running:
            joined.add(slot.instance_id)
            if slot.busy:
                st.busy_slots += 1
            else:
                st.idle_slots += 1
    st.running, st.joined = len(running), len(joined)
    st.not_joined = sorted(running - joined)
    return st


def status_from_dict(data: dict[str, Any]) -> AnnexStatus:
    """The :class:`AnnexStatus` a pass kept in the store (:meth:`AnnexStatus.as_dict`'s shape
    plus ``lifecycle`` and per-instance ``instances`` rows)."""
    end = data.get("lease_expires_at")
    return AnnexStatus(name=data["name"], requested=data.get("requested", 0),
                       running=data.get("running", 0), joined=data.get("joined", 0),
                       idle_slots=data.get("idle_slots", 0), busy_slots=data.get("busy_slots", 0),
                       lease_expires_at=datetime.fromisoformat(end) if end else None,
                       states=dict(data.get("states", {})),
                       not_joined=list(data.get("not_joined", [])),
                       lifecycle=dict(data.get("lifecycle", {})),
                       reasons=notable_reasons(data.get("instances", [])),
                       usd_per_hour=data.get("usd_per_hour"), usd_spent=data.get("usd_spent"),
                       instances=[_public_row(i) for i in data.get("instances", [])],
                       price_unknown=list(data.get("price_unknown", [])),
                       price_snapshot_date=data.get("price_snapshot_date", ""),
                       interruptions=int(data.get("interruptions", 0)),
                       replacements=int(data.get("replacements", 0)),
                       autoscale=data.get("autoscale"),
                       end_reason=str(data.get("end_reason") or ""),
                       budget_usd=data.get("budget_usd"))


#: The keys of a pass's per-instance rows that ``status --json`` shows (``id`` and ``reason``
#: are the store's own).
_PUBLIC_KEYS = ("instance_id", "ec2_state", "lifecycle", "market", "instance_type",
                "usd_per_hour")


def _public_row(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row.get(k) for k in _PUBLIC_KEYS}
    out["instance_id"] = row.get("instance_id") or row.get("id", "")
    return out


#: Lifecycle states whose reason ``status`` shows (the others are the normal course).
NOTABLE = ("never-joined", "allocation-failed", "termination-failed")


def notable_reasons(instances: list[dict[str, Any]]) -> dict[str, str]:
    """Instance id -> reason, for instances in a :data:`NOTABLE` lifecycle state (or ended as
    never joined), from a pass's per-instance rows (id, lifecycle, reason)."""
    return {i["id"]: i["reason"] for i in instances
            if i.get("reason") and (i.get("lifecycle") in NOTABLE
                                    or str(i.get("reason", "")).startswith("never joined"))}


def merge_instance_rows(store_rows: list[dict[str, Any]],
                        cost_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A pass's per-instance rows (``id``, ``ec2_state``, ``lifecycle``, ``reason``) with each
    instance's cost row (:func:`add_cost`) merged in by id; instances only the cloud lists
    are added (lifecycle "")."""
    by_id = {r["instance_id"]: r for r in cost_rows}
    out = []
    for row in store_rows:
        merged = {**by_id.pop(row["id"], {"instance_id": row["id"]}), **row}
        out.append(merged)
    out.extend({**r, "id": r["instance_id"], "reason": ""} for r in by_id.values())
    return out


def ended_times(transitions: dict[str, Any]) -> dict[str, datetime]:
    """Instance id -> when the store saw it terminated, from
    :meth:`Store.last_transitions <condor_annex.state.store.Store.last_transitions>`."""
    return {iid: t.at for iid, t in transitions.items() if t.to_state == "terminated"}
