"""The action of the autoscale rule (issue 13): a pass's decision for a demand-driven annex.

Kept apart from :mod:`condor_annex.reconciler.actions` (which lists it in ``Action``) so the
rule's module and the action table import each other in one direction only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class SetAutoscale:
    """Record an autoscaled annex's decision in the store (no cloud call): when demand was
    first seen above capacity (None: not above), the demand counted (None: not known), the
    target size, the instances to launch (``want``, of which ``want_keep`` bring it up to
    ``--min``) and why.  condor_annexd launches ``want`` after the pass
    (:mod:`condor_annex.service.autoscale_launch`); a command's own pass never launches."""

    annex: str
    above_since: datetime | None
    demand: int | None
    target: int
    want: int
    want_keep: int
    reason: str
