"""What an annex costs (issue 12 item 4): its hourly rate now and what it has spent, from its
instances, their prices and the time (pure: no I/O; prices come in through a lookup).

* **Rate now** (USD per hour): the sum over pending and running instances of the price of their
  market (EC2 ``InstanceLifecycle``: ``spot`` instances at the Spot price, the others at the
  On-Demand price), plus one public IPv4 address per instance that has one (AWS charges every
  in-use public IPv4 address, aws.amazon.com/vpc/pricing).  EC2 bills a running instance only:
  stopped and terminated ones add nothing.
* **Spent** (USD): each instance's running seconds (from ``LaunchTime`` to now, or to when the
  state store saw it end) times its price at launch (the price ``create`` kept in the store,
  else the current one) / 3600, plus its public IPv4 address at its rate.  EC2 bills Linux
  instances per second ("Amazon EC2 On-Demand Pricing": per-second billing, 60 s minimum),
  so a launch younger than a minute counts as one minute.
* **Left out**: EBS volumes (their size is not in DescribeInstances; a root volume of 8-30 GB
  gp3 costs less than $0.003 an hour), data transfer, and the time an ended instance ran that
  neither the cloud's listing nor the store dates (an instance ended before any pass saw it).

A price no source knows makes the rate and the amount spent unknown (``None``, shown as "?"),
never zero.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from condor_annex.model import CloudInstance
from condor_annex.providers.aws.pricing import SOURCE_SNAPSHOT, Price

__all__ = ["MARKET_ON_DEMAND", "MARKET_SPOT", "AnnexCost", "InstanceCost", "LeaseEstimate",
           "PriceLookup", "annex_cost", "launch_prices", "lease_estimate", "market_of"]

MARKET_ON_DEMAND = "on-demand"
MARKET_SPOT = "spot"
#: EC2 bills at least this many seconds of a Linux instance (per-second billing's minimum).
MINIMUM_BILLED_S = 60.0
#: The annex spec's key holding the prices ``create`` saw (:func:`launch_prices`).
SPEC_KEY = "launch_prices"

#: (instance type, market, Availability Zone or "") -> its price now, or None when no source
#: knows it.  A Spot price is per zone: "" means the region's lowest.
PriceLookup = Callable[[str, str, str], "Price | None"]


def market_of(inst: CloudInstance) -> str:
    """``"spot"`` or ``"on-demand"`` (EC2 ``InstanceLifecycle``; absent means on-demand)."""
    return MARKET_SPOT if inst.lifecycle == MARKET_SPOT else MARKET_ON_DEMAND


def _running(inst: CloudInstance) -> bool:
    return inst.state in ("pending", "running")


@dataclass(frozen=True)
class InstanceCost:
    """One instance's price.

    Attributes:
        instance_id / instance_type / ec2_state: as EC2 lists them.
        market: ``"spot"`` or ``"on-demand"``.
        usd_per_hour: what it costs per hour now (0.0 when not running), or None (unknown).
        usd_spent: what it has cost so far, or None (unknown).
    """

    instance_id: str
    instance_type: str
    ec2_state: str
    market: str
    usd_per_hour: float | None
    usd_spent: float | None


@dataclass(frozen=True)
class AnnexCost:
    """One annex's cost.

    Attributes:
        usd_per_hour: its rate now (USD per hour), or None when a running instance's price is
            unknown.
        usd_spent: spent so far (USD), or None when an instance's price is unknown.
        instances: one :class:`InstanceCost` per instance, by id.
        unknown_types: instance types no price source knows.
        snapshot_date: the shipped snapshot's date when a price came from it, else "".
    """

    usd_per_hour: float | None
    usd_spent: float | None
    instances: tuple[InstanceCost, ...] = ()
    unknown_types: tuple[str, ...] = ()
    snapshot_date: str = ""


def launch_prices(spec: Mapping[str, Any] | None) -> dict[tuple[str, str], float]:
    """The prices ``create`` kept in the annex's spec (key ``launch_prices``: instance type ->
    ``{"market", "usd_per_hour", "source", "as_of"}``), as (type, market) -> USD per hour;
    empty for an annex recorded before prices were kept, or a malformed entry."""
    found: dict[tuple[str, str], float] = {}
    for itype, entry in dict((spec or {}).get(SPEC_KEY) or {}).items():
        try:
            found[(str(itype), str(entry["market"]))] = float(entry["usd_per_hour"])
        except (KeyError, TypeError, ValueError):
            continue
    return found


def annex_cost(instances: Mapping[str, CloudInstance], price_now: PriceLookup, now: datetime,
               *, at_launch: Mapping[tuple[str, str], float] | None = None,
               ended_at: Mapping[str, datetime] | None = None,
               ip_usd_per_hour: float = 0.0) -> AnnexCost:
    """The annex's rate now and what it has spent (see the module docstring).

    Args:
        instances: the annex's instances as EC2 lists them (any state), by id.
        price_now: (instance type, market, zone) -> :class:`Price` per hour now, or None.
        now: the time (aware UTC).
        at_launch: (type, market) -> USD per hour kept at create (:func:`launch_prices`).
        ended_at: instance id -> when it ended (the store's transition to terminated), for
            instances no longer running.
        ip_usd_per_hour: one public IPv4 address per hour (0 leaves addresses out).

    Returns:
        :class:`AnnexCost`.
    """
    at_launch = at_launch or {}
    ended_at = ended_at or {}
    rows: list[InstanceCost] = []
    unknown: set[str] = set()
    snapshot = ""
    rate: float | None = 0.0
    spent: float | None = 0.0
    for iid in sorted(instances):
        inst = instances[iid]
        market = market_of(inst)
        price = price_now(inst.instance_type, market,
                          inst.az if market == MARKET_SPOT else "") if inst.instance_type else None
        if price is not None and price.source == SOURCE_SNAPSHOT:
            snapshot = price.as_of
        now_usd = None if price is None else price.usd
        launch_usd = at_launch.get((inst.instance_type, market), now_usd)
        ip = ip_usd_per_hour if inst.public_ip else 0.0
        seconds = _billed_seconds(inst, now, ended_at.get(iid))
        if _running(inst):
            inst_rate = None if now_usd is None else now_usd + ip
        else:
            inst_rate = 0.0
        if seconds == 0:
            inst_spent: float | None = 0.0
        elif launch_usd is None:
            inst_spent = None
        else:
            inst_spent = seconds * (launch_usd + ip) / 3600.0
        if inst_rate is None or inst_spent is None:
            unknown.add(inst.instance_type or "?")
        rate = None if rate is None or inst_rate is None else rate + inst_rate
        spent = None if spent is None or inst_spent is None else spent + inst_spent
        rows.append(InstanceCost(iid, inst.instance_type, inst.state, market, inst_rate,
                                 inst_spent))
    return AnnexCost(rate, spent, tuple(rows), tuple(sorted(unknown)), snapshot)


def _billed_seconds(inst: CloudInstance, now: datetime, ended: datetime | None) -> float:
    """Seconds EC2 bills for ``inst`` until ``now``: from its launch to now while it runs, to
    when it ended otherwise (0 when that is not known), at least :data:`MINIMUM_BILLED_S`."""
    if inst.launch_time is None:
        return 0.0
    if _running(inst) or inst.state == "stopping":
        end = now
    elif ended is not None:
        end = min(ended, now)
    else:
        return 0.0
    return max((end - inst.launch_time).total_seconds(), MINIMUM_BILLED_S)


@dataclass(frozen=True)
class EstimateRow:
    """One instance type of a lease estimate: ``count`` instances at ``usd_per_hour`` each
    (None: unknown) for ``hours``; ``usd`` their total, or None."""

    instance_type: str
    count: float
    market: str
    usd_per_hour: float | None
    hours: float
    usd: float | None
    price: Price | None = None


@dataclass(frozen=True)
class LeaseEstimate:
    """What a create will cost if it runs its whole lease.

    Attributes:
        rows: one :class:`EstimateRow` per instance type.
        usd: the total, or None when a type's price is unknown.
        unknown_types: instance types no price source knows.
        snapshot_date: the snapshot's date when a price came from it, else "".
    """

    rows: tuple[EstimateRow, ...]
    usd: float | None
    unknown_types: tuple[str, ...] = field(default=())
    snapshot_date: str = ""


def lease_estimate(counts: Iterable[tuple[str, float]], market: str, price_now: PriceLookup,
                   lease_seconds: float) -> LeaseEstimate:
    """count x price x lease hours for each instance type, and the total.

    Args:
        counts: (instance type, instances) pairs; a type given twice adds up.
        market: ``"spot"`` or ``"on-demand"``.
        price_now: as in :func:`annex_cost`.
        lease_seconds: the lease, seconds.
    """
    merged: dict[str, float] = {}
    for itype, count in counts:
        merged[itype] = merged.get(itype, 0) + count
    hours = lease_seconds / 3600.0
    rows = []
    snapshot = ""
    for itype, count in merged.items():
        price = price_now(itype, market, "")
        if price is not None and price.source == SOURCE_SNAPSHOT:
            snapshot = price.as_of
        usd = None if price is None else price.usd
        rows.append(EstimateRow(itype, count, market, usd, hours,
                                None if usd is None else count * usd * hours, price))
    unknown = tuple(r.instance_type for r in rows if r.usd is None)
    total = None if unknown else sum(r.usd or 0.0 for r in rows)
    return LeaseEstimate(tuple(rows), total, unknown, snapshot)
