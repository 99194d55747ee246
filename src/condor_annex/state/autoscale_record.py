"""The state store's row of a demand-driven annex (issue 13), as a frozen dataclass.  Pure
data: no I/O, importable by the pure planner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class AutoscaleRecord:
    """An autoscaled annex's bounds and the last pass's decision.

    Attributes:
        annex: the annex name.
        min_count: instances kept whatever the demand (``--min``; they have no idle shutdown).
        max_count: instances never exceeded (``--max``).
        template: the attributes of one slot of the annex's instance type (``Cpus``,
            ``Memory`` in MiB, ``Arch``, ``OpSys``, ``AnnexName``, ... and ``Start``, the
            START expression's text), against which idle jobs are matched.
        above_since: when a pass first saw demand above idle-or-booting capacity (aware UTC),
            or None when it is not above.
        demand: idle jobs that could run on the annex as the last pass counted them, or None
            when it could not count them (a schedd did not answer).
        target: the instances the last pass wanted the annex to have.
        want: instances the last pass decided to launch (condor_annexd launches them and sets
            it back to 0).
        want_keep: of ``want``, how many bring the annex up to ``min_count`` (launched with no
            idle shutdown).
        why: the last decision, for people (e.g. "demand 12 > capacity 2 for 31 s: growing to
            4 (max)").
        at: when the last pass decided (aware UTC), or None before any pass.
    """

    annex: str
    min_count: int
    max_count: int
    template: dict[str, Any]
    above_since: datetime | None = None
    demand: int | None = None
    target: int = 0
    want: int = 0
    want_keep: int = 0
    why: str = ""
    at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``status --json``'s ``autoscale``)."""
        return {"min": self.min_count, "max": self.max_count, "demand": self.demand,
                "target": self.target, "why": self.why,
                "above_since": self.above_since.isoformat() if self.above_since else None}
