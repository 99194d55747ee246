"""``logs NAME [INSTANCE_ID] [--json]``: the console output of an annex's instances, and the
log their agent uploaded when a boot failed; for an instance whose console EC2 no longer gives,
the copy the reconciler saved before it ended the instance."""

from __future__ import annotations

from condor_annex.cli import render
from condor_annex.model import validate_annex_name


def add_verb(sub) -> None:
    """Register ``logs`` on an argparse sub-parser set."""
    p = sub.add_parser("logs", help="console output of an annex's instances (cloud-init's and "
                                    "the agent's lines), newest last, and the agent's log "
                                    "of a failed boot, or the copy saved before the "
                                    "reconciler ended a never-joined instance")
    p.add_argument("name", help="annex name")
    p.add_argument("instance_id", nargs="?", metavar="INSTANCE_ID",
                   help="one instance of the annex (default: all of them)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_logs)


def cmd_logs(args) -> int:
    """Print each instance's console output under a heading naming it, oldest launch first
    (newest last), and below it the agent log that instance uploaded, if any; a console the
    reconciler saved says so (when, and why it ended the instance); ``--json``: a list of
    :meth:`ConsoleLog.as_dict` (``agent_log``: the text, or null; ``saved_at``: when the
    output shown was saved, or null)."""
    from condor_annex.service import logs
    from condor_annex.service.context import Context
    name = validate_annex_name(args.name, "NAME")
    only = logs.instance_id(args.instance_id) if args.instance_id else None
    found = logs.annex_logs(Context.load(), name, only)
    if args.json:
        render.emit({"annex": name, "instances": [c.as_dict() for c in found]}, True, "")
        return 0
    if not found:
        render.console.print(f"Annex {name} has launched no instance yet.")
        return 0
    for c in found:
        when = f", captured {c.captured_at:%Y-%m-%d %H:%M:%S} UTC" if c.captured_at else ""
        render.console.rule(f"{c.instance_id} ({c.state}{when})", align="left")
        if c.saved_at is not None:
            # Its own line, not the rule's title: a rule truncates a long title to the width.
            why = f": {c.saved_reason}" if c.saved_reason else ""
            render.console.print(f"(saved by the reconciler at {c.saved_at:%Y-%m-%d %H:%M:%S} "
                                 f"UTC before it ended the instance{why})", markup=False,
                                 highlight=False, soft_wrap=True)
        empty = "(EC2 had no console output)" if c.saved_at else "(no console output yet)"
        # Console text is printed as it is: no rich markup or highlighting of its brackets.
        render.console.print(c.text.rstrip("\n") if c.text else empty,
                             markup=False, highlight=False, soft_wrap=True)
        if c.agent_log is not None:
            render.console.rule(f"{c.instance_id}: agent log (uploaded when its boot failed)",
                                align="left")
            render.console.print(c.agent_log.rstrip("\n") or "(empty)", markup=False,
                                 highlight=False, soft_wrap=True)
    return 0
