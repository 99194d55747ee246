"""``condor_annex list [--json]``: the annexes the state store knows, one line each, without a
cloud call (``status`` asks the cloud and the pool)."""

from __future__ import annotations

import json
import sys
from datetime import datetime

from rich.console import Console
from rich.table import Table


def add_verb(sub) -> None:
    """Register ``list`` on the verb sub-parsers."""
    p = sub.add_parser("list", help="annexes in the state store (ANNEX_STATE_FILE), one line "
                                    "each; no cloud call")
    p.add_argument("--all", action="store_true", help="also annexes that have ended")
    p.add_argument("--json", action="store_true",
                   help="a JSON list, one object per annex: name, requested, lease_end, "
                        "created_at, ended_at, launch_stopped, launch_requests")
    p.set_defaults(func=cmd_list)


def _when(at: datetime | None) -> str | None:
    return None if at is None else at.strftime("%Y-%m-%dT%H:%M:%SZ")


def annex_rows(store, *, include_ended: bool = False) -> list[dict]:
    """Each annex of ``store`` (:class:`condor_annex.state.store.Store`) as a JSON-ready dict:
    ``name``, ``requested`` (instances / weighted capacity), ``lease_end``, ``created_at``,
    ``ended_at`` (ISO 8601 UTC or null), ``launch_stopped`` ("" or why) and
    ``launch_requests`` (objects: ``client_token``, ``kind``, ``count``, ``state``)."""
    requests: dict[str, list[dict]] = {}
    for r in store.launch_requests():
        requests.setdefault(r.annex, []).append(
            {"client_token": r.client_token, "kind": r.kind, "count": r.count,
             "state": r.state})
    return [{"name": a.name, "requested": a.requested, "lease_end": _when(a.lease_end),
             "created_at": _when(a.created_at), "ended_at": _when(a.ended_at),
             "launch_stopped": a.launch_stopped, "launch_requests": requests.get(a.name, [])}
            for a in store.annexes(include_ended=include_ended)]


def cmd_list(args) -> int:
    """``list [--all] [--json]``.

    Raises:
        BadInputError: the state file is corrupt or from a newer version (one line naming it).
    """
    from condor_annex.state.store import open_store
    with open_store() as store:
        rows = annex_rows(store, include_ended=args.all)
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    console = Console()
    if not rows:
        console.print("No annexes in the state store.")
        return 0
    table = Table(title="Annexes (state store)")
    for col in ("annex", "requested", "lease end (UTC)", "launch requests", "note"):
        table.add_column(col, justify="right" if col == "requested" else "left")
    for r in rows:
        launches = ", ".join(f"{q['count']} {q['kind']} {q['state']}"
                             for q in r["launch_requests"]) or "-"
        note = (f"ended {r['ended_at']}" if r["ended_at"] else r["launch_stopped"])
        table.add_row(r["name"], str(r["requested"]),
                      (r["lease_end"] or "-").replace("T", " ").rstrip("Z"), launches, note)
    console.print(table)
    return 0
