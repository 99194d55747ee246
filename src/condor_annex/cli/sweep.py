"""``sweep [--dry-run] [--adopt] [--json]``: end what this user's annexes left behind."""

from __future__ import annotations

import json
import sys

from rich.table import Table

from condor_annex.cli import render


def add_verb(sub) -> None:
    """Register ``sweep`` on an argparse sub-parser set."""
    p = sub.add_parser("sweep", help="end your orphans: instances, fleets, launch templates, "
                                     "leases, bundles and roles of annexes with no live lease")
    p.add_argument("--dry-run", action="store_true", help="only list the orphans; end nothing")
    p.add_argument("--adopt", action="store_true",
                   help="first record your live annexes that the state file does not know "
                        "(rebuilds a lost state file from the cloud)")
    p.add_argument("--json", action="store_true",
                   help="a JSON list, one object per orphan: kind, id, annex, reason")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    """List (``--dry-run``) or end this user's orphans; print them as a table, or with
    ``--json`` as a list of ``{kind, id, annex, reason}``.  Exit 0, also when there are none."""
    from condor_annex.service.context import Context
    from condor_annex.service.sweep import sweep
    found = sweep(Context.load(), dry_run=args.dry_run, adopt=args.adopt)
    if args.json:
        json.dump([o.as_dict() for o in found], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    if not found:
        render.console.print("Found no orphans.")
        return 0
    table = Table(title="Orphans" + (" (dry run: nothing ended)" if args.dry_run
                                     else " (ended)"))
    for col in ("annex", "kind", "id", "reason"):
        table.add_column(col)
    for o in found:
        table.add_row(o.annex, o.kind, o.id, o.reason)
    render.console.print(table)
    return 0
