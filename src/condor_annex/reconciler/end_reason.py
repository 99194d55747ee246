"""Why an annex is ending or ended, as ``status`` shows it (issue 12 item 5: an annex its
budget ended says so), from its record in the store (pure: no I/O).

* while its budget drains it: the drain's reason (``budget: $0.40 spent of its $0.42 budget at
  $1.20/h (--budget); its nodes leave the pool``);
* once the reconciler ended it: the reason of that end (the spec's ``ended_reason``, written
  by the executor), e.g. ``budget: ...; ended: its nodes left the pool`` or ``its lease ended
  at ...``;
* otherwise "".

An annex the reconciler ended stays in ``status`` for :data:`SHOWN_AFTER_END_S` seconds after
its end, as its terminated instances do in EC2's listing (about an hour).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from condor_annex.reconciler.budget import budget_of, drain_of
from condor_annex.reconciler.budget_actions import ENDED_REASON_KEY
from condor_annex.state.records import AnnexRecord

#: Seconds an annex the reconciler ended is still shown by ``status``.
SHOWN_AFTER_END_S = 3600.0


def end_reason(record: AnnexRecord | None) -> str:
    """Why the annex is ending or ended ("" when neither, or no record)."""
    if record is None:
        return ""
    if record.ended_at is not None:
        return str(record.spec.get(ENDED_REASON_KEY) or "ended")
    drain = drain_of(record.spec)
    return str(drain.get("reason", "")) if drain else ""


def status_fields(record: AnnexRecord | None) -> dict[str, Any]:
    """``status --json``'s ``end_reason`` (str) and ``budget_usd`` (USD, or None for none)."""
    budget = budget_of(record.spec) if record is not None else 0.0
    return {"end_reason": end_reason(record), "budget_usd": budget or None}


def shown_ended(records: list[AnnexRecord], at: datetime) -> list[AnnexRecord]:
    """The ended annexes ``status`` still shows at ``at``: those the reconciler ended (they
    have an ``ended_reason``) less than :data:`SHOWN_AFTER_END_S` ago."""
    return [r for r in records
            if r.ended_at is not None and r.spec.get(ENDED_REASON_KEY)
            and (at - r.ended_at).total_seconds() < SHOWN_AFTER_END_S]
