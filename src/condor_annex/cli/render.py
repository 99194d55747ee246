"""People's output (rich tables) and scripts' output (``--json``) of service-layer results."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from condor_annex.cli.cost_text import cost_total_line, usd as _usd

console = Console()
err_console = Console(stderr=True)


def _lease_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0:
        return f"ended {int(-seconds)} s ago"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def status_table(rows: Sequence, as_json: bool = False) -> None:
    """Print annex status rows (:class:`~condor_annex.service.annex.AnnexStatus`)."""
    if as_json:
        json.dump([r.as_dict() for r in rows], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    if not rows:
        console.print("Found no instances in any annex.")
        return
    table = Table(title="Annexes")
    for col in ("annex", "requested", "running", "joined", "idle slots", "busy slots",
                "lease ends in", "$/h now", "spent"):
        table.add_column(col, justify="left" if col == "annex" else "right")
    for r in rows:
        table.add_row(r.name, str(r.requested), str(r.running), str(r.joined),
                      str(r.idle_slots), str(r.busy_slots), _lease_text(r.lease_seconds_left()),
                      _usd(getattr(r, "usd_per_hour", None)), _usd(getattr(r, "usd_spent", None)))
    console.print(table)
    console.print(cost_total_line(rows), soft_wrap=True, markup=False)
    for r in rows:
        if r.not_joined:
            console.print(f"{r.name}: instances not in the pool: {' '.join(r.not_joined)}")
        if getattr(r, "end_reason", ""):   # why it is ending or ended (e.g. its budget)
            console.print(f"{r.name}: {r.end_reason}", soft_wrap=True, markup=False)
        if r.interruptions:
            console.print(f"{r.name}: {r.interruptions} spot interruption(s), "
                          f"{r.replacements} replacement(s) launched")
        scaled = getattr(r, "autoscale", None)
        if scaled:   # issue 13: one line, never wrapped
            demand = "?" if scaled.get("demand") is None else scaled["demand"]
            console.print(f"{r.name}: autoscale {scaled['min']}..{scaled['max']}: demand "
                          f"{demand}, target {scaled['target']}: "
                          f"{scaled['why'] or 'no pass yet'}", soft_wrap=True, markup=False)
        for iid, why in sorted(r.reasons.items()):
            # One line each, never wrapped: it ends with the command to run.
            console.print(f"{r.name}: {iid}: {why}", soft_wrap=True, markup=False)
    as_of = [r.as_of for r in rows if r.as_of is not None]
    if as_of:
        console.print(f"As of condor_annexd's last pass at {min(as_of):%H:%M:%S} UTC; "
                      "--refresh runs one now.")


def check_table(rows: Sequence[tuple[str, bool, str]], as_json: bool = False, *,
                title: str = "Setup check", first: str = "resource") -> None:
    """Print check-setup rows (``first``: the name of the first column and JSON key)."""
    if as_json:
        json.dump([{first: r, "ok": ok, "detail": d} for r, ok, d in rows], sys.stdout,
                  indent=1)
        sys.stdout.write("\n")
        return
    table = Table(title=title)
    table.add_column(first)
    table.add_column("ok")
    table.add_column("detail")
    for r, ok, d in rows:
        table.add_row(r, "[green]OK[/]" if ok else "[red]FAILED[/]", d)
    console.print(table)


def emit(data: dict, as_json: bool, text: str) -> None:
    """Print ``data`` as JSON for scripts, or ``text`` for people."""
    if as_json:
        json.dump(data, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
    else:
        console.print(text)
