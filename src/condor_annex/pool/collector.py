"""Collector queries through the ``htcondor`` bindings (htcondor2 API).

Annex nodes advertise ``AnnexName``, ``IsAnnex`` and ``EC2InstanceID`` in their startd and master
ads (see :mod:`condor_annex.pool.configs`), which is what ``condor_status -annex`` filters on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from condor_annex.errors import PoolError

_PROJECTION = ["Name", "Machine", "AnnexName", "EC2InstanceID", "State", "Activity",
               "SlotType", "Cpus", "LastHeardFrom", "JobStarts", "AnnexInterruption"]


@dataclass(frozen=True)
class SlotAd:
    """One slot of an annex node, as the collector reports it.

    Attributes:
        name: slot name, e.g. ``slot1@ip-10-200-1-1``.
        machine: host name.
        annex_name: ``AnnexName``.
        instance_id: ``EC2InstanceID``.
        state: ``Unclaimed``, ``Claimed``, ...
        activity: ``Idle``, ``Busy``, ...
        job_starts: ``JobStarts``, jobs started on the slot since its startd began (0 when
            the ad has none).
        interruption: ``AnnexInterruption``: the node got EC2's spot interruption notice and
            is draining (the agent advertises it).
        cpus: ``Cpus`` (0 when the ad has none).
    """

    name: str
    machine: str
    annex_name: str
    instance_id: str
    state: str
    activity: str
    job_starts: int = 0
    interruption: bool = False
    cpus: int = 0

    @property
    def worked(self) -> bool:
        """True when the slot runs or has run a job (claimed now, or ``JobStarts`` > 0)."""
        return self.state == "Claimed" or self.job_starts > 0

    @property
    def busy(self) -> bool:
        """True when the slot runs a job (Claimed/Busy)."""
        return self.state == "Claimed" and self.activity in ("Busy", "Retiring")


def _constraint(annex_name: str | None) -> str:
    if annex_name is None:
        return "IsAnnex =?= True"
    if not re.fullmatch(r"[A-Za-z0-9-]+", annex_name):
        raise PoolError(f"refusing to query with annex name {annex_name!r}")
    return f'AnnexName =?= "{annex_name}"'


def annex_slots(collector: str, annex_name: str | None = None) -> list[SlotAd]:
    """Startd (slot) ads of one annex, or of every annex.

    Args:
        collector: ``host:port`` of the collector (COLLECTOR_HOST).
        annex_name: exact ``AnnexName`` (never a prefix), or None for ``IsAnnex``.

    Raises:
        PoolError: the collector cannot be reached.
    """
    import htcondor2

    try:
        ads = htcondor2.Collector(collector).query(
            htcondor2.AdType.Startd, constraint=_constraint(annex_name), projection=_PROJECTION)
    except Exception as e:  # the bindings raise HTCondorException/IOError subclasses
        raise PoolError(f"collector {collector}: query failed: {e}") from e
    return [SlotAd(name=str(ad.get("Name", "")), machine=str(ad.get("Machine", "")),
                   annex_name=str(ad.get("AnnexName", "")),
                   instance_id=str(ad.get("EC2InstanceID", "")),
                   state=str(ad.get("State", "")), activity=str(ad.get("Activity", "")),
                   job_starts=_int(ad.get("JobStarts", 0)),
                   interruption=ad.get("AnnexInterruption", False) is True,
                   cpus=_int(ad.get("Cpus", 0)))
            for ad in ads]


def _int(value: object) -> int:
    try:
        return int(value)   # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0


def collector_alive(collector: str) -> bool:
    """True when the collector answers a query for its own ad."""
    import htcondor2

    try:
        htcondor2.Collector(collector).query(htcondor2.AdType.Collector, projection=["Name"])
        return True
    except Exception:  # noqa: BLE001 - any failure means "not yet"
        return False
