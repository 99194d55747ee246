"""What ``extend`` says of the annex's budget (issue 12 item 5), for people and ``--json``."""

from __future__ import annotations

from typing import Any


def extend_budget_text(check: Any) -> str:
    """One sentence (with a leading space), or "" when the annex has no budget.

    Args:
        check: :class:`condor_annex.service.budget_change.BudgetCheck`, or None.
    """
    if check is None:
        return ""
    verb = "is now" if check.changed else "is"
    return (f" Its budget {verb} ${check.budget_usd:.2f}: ${check.spent_usd:.2f} spent, "
            f"${check.usd_per_hour:.2f}/h now, ${check.projected_usd:.2f} by its lease end.")


def extend_budget_json(check: Any) -> dict[str, Any]:
    """``extend --json``'s budget fields: ``budget_usd`` (None: no budget), ``usd_spent``,
    ``usd_per_hour``, ``usd_projected`` (USD rounded to 1/100 cent)."""
    if check is None:
        return {"budget_usd": None}
    return {"budget_usd": check.budget_usd, "usd_spent": round(check.spent_usd, 4),
            "usd_per_hour": round(check.usd_per_hour, 4),
            "usd_projected": round(check.projected_usd, 4)}
