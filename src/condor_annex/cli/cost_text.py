"""Money for people (issue 12 item 4): dollar amounts ("?" when a price is unknown, never
$0), ``status``'s total line, and the create prompt's estimate table (after SkyPilot's launch
table: instance type, count, $/h each, lease, estimate)."""

from __future__ import annotations

from collections.abc import Sequence


def usd(value: float | None) -> str:
    """Dollars for people: "?" when unknown (never 0), else 2 decimals (4 below a cent)."""
    if value is None:
        return "?"
    return f"${value:.4f}" if 0 < value < 0.01 else f"${value:.2f}"


def _sum(values: list[float | None]) -> float | None:
    """The sum, or None when any value is unknown."""
    known = [v for v in values if v is not None]
    return None if len(known) < len(values) else sum(known, 0.0)


def cost_total_line(rows: Sequence) -> str:
    """"Total: $X/h now, $Y spent" over ``rows``, naming unknown prices and the price
    snapshot's date when a price came from it."""
    rate = [getattr(r, "usd_per_hour", None) for r in rows]
    spent = [getattr(r, "usd_spent", None) for r in rows]
    line = f"Total: {usd(_sum(rate))}/h now, {usd(_sum(spent))} spent"
    unknown = sorted({t for r in rows for t in getattr(r, "price_unknown", [])})
    if unknown:
        line += f" (no price known for {', '.join(unknown)})"
    dates = sorted({getattr(r, "price_snapshot_date", "") for r in rows} - {""})
    if dates:
        line += f"; prices from the snapshot of {dates[-1]} (AWS's price API did not answer)"
    return line + "."


def _hours(h: float) -> str:
    return f"{h:.2f} h"


def _market(market: str) -> str:
    return "Spot" if market == "spot" else "On-Demand"


def estimate_line(est) -> str:
    """The classic prompt's estimate, one line: count x type at $/h each for the lease =
    total (:class:`~condor_annex.reconciler.cost.LeaseEstimate`); the price snapshot's date
    when a price came from it; "unknown" naming the type when no price is known."""
    if est.usd is None:
        return (f"Estimated cost: unknown (no {_market(est.rows[0].market if est.rows else '')}"
                f" price known for instance type {', '.join(est.unknown_types)}).")
    parts = ", ".join(f"{r.count:g} x {r.instance_type} at {usd(r.usd_per_hour)}/h each "
                      f"({_market(r.market)})" for r in est.rows)
    hours = est.rows[0].hours if est.rows else 0.0
    line = f"Estimated cost for the whole lease: {parts} for {hours:.2f} hours = {usd(est.usd)}"
    if est.snapshot_date:
        line += f" (prices from the snapshot of {est.snapshot_date})"
    return line + "."


def estimate_table(est):
    """The modern prompt's estimate as a rich table (instance type, count, $/h each, lease,
    estimate), with a total row; "?" and a caption naming the type when a price is unknown."""
    from rich.table import Table
    table = Table(title="Estimated cost")
    for col in ("instance type", "market", "count", "$/h each", "lease", "estimate"):
        table.add_column(col, justify="left" if col in ("instance type", "market") else "right")
    for r in est.rows:
        table.add_row(r.instance_type, _market(r.market), f"{r.count:g}", usd(r.usd_per_hour),
                      _hours(r.hours), usd(r.usd))
    table.add_row("total", "", "", "", "", usd(est.usd))
    notes = []
    if est.unknown_types:
        notes.append(f"no price known for {', '.join(est.unknown_types)}")
    if est.snapshot_date:
        notes.append(f"prices from the snapshot of {est.snapshot_date}")
    if notes:
        table.caption = "; ".join(notes)
    return table
