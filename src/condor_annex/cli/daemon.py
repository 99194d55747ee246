"""``condor_annex daemon status [--json]`` and ``condor_annex daemon unit``: condor_annexd as
the state file and the process table see it (no cloud call)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from datetime import datetime, timezone

from rich.console import Console
from rich.table import Table


def add_verb(sub) -> None:
    """Register ``daemon status`` and ``daemon unit`` on the verb sub-parsers."""
    p = sub.add_parser("daemon", help="condor_annexd, the annex daemon: is it running, its "
                                      "last pass, errors")
    dsub = p.add_subparsers(dest="daemon_verb", required=True, metavar="VERB")
    st = dsub.add_parser("status", help="the daemon serving your state file and its last pass")
    st.add_argument("--json", action="store_true",
                    help="one JSON object: running, pid, state_file, report (passes, errors, "
                         "last_pass, orphans, throttled_calls, ...), report_at")
    st.set_defaults(func=cmd_status)
    un = dsub.add_parser("unit", help="print a systemd user unit running condor_annexd "
                                      "(save as ~/.config/systemd/user/condor-annexd.service)")
    un.set_defaults(func=cmd_unit)


def status(knobs: dict[str, str] | None = None) -> dict:
    """``{"running": bool, "pid": int | None, "state_file": str, "report": dict | None,
    "report_at": ISO 8601 | None}`` for the user's state file.

    Raises:
        BadInputError: the state file is corrupt or from a newer version.
    """
    from condor_annex.state import daemon_lock
    from condor_annex.state.store import default_path, open_store
    path = default_path(knobs)
    pid = daemon_lock.holder(path)
    report = at = None
    if path.exists():
        with open_store(knobs) as store:
            found = store.daemon_report()
        if found is not None:
            at, report = found
    return {"running": pid is not None, "pid": pid, "state_file": str(path), "report": report,
            "report_at": at.isoformat() if at else None}


def cmd_status(args) -> int:
    """``daemon status [--json]``: exit 0 when a daemon serves the state file, 1 when none."""
    data = status()
    if args.json:
        json.dump(data, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
        return 0 if data["running"] else 1
    console = Console()
    report = data["report"] or {}
    last = report.get("last_pass") or {}
    table = Table(title="condor_annexd")
    table.add_column("")
    table.add_column("")
    table.add_row("running", f"yes, pid {data['pid']}" if data["running"] else "no")
    table.add_row("state file", data["state_file"])
    if report:
        table.add_row("passes", str(report.get("passes", 0)))
        if data["report_at"]:
            age = (datetime.now(timezone.utc)
                   - datetime.fromisoformat(data["report_at"])).total_seconds()
            table.add_row("last pass", f"{data['report_at']} ({age:.0f} s ago, "
                                       f"{last.get('seconds', 0):.2f} s long)")
        table.add_row("annexes / instances",
                      f"{last.get('annexes', 0)} / {last.get('instances', 0)}")
        table.add_row("errors", f"{report.get('errors', 0)}"
                      + (f" (last: {report['last_error']})" if report.get("last_error") else ""))
        table.add_row("throttled calls", str(report.get("throttled_calls", 0)))
        table.add_row("orphans (last pass)", str(len(report.get("orphans", []))))
    console.print(table)
    if not data["running"]:
        console.print("No condor_annexd serves this state file: each condor_annex command "
                      "runs a reconciler pass itself. Start one with 'condor_annexd' (see "
                      "docs/annexd.md).")
    return 0 if data["running"] else 1


def unit_text(executable: str, environment: dict[str, str]) -> str:
    """A systemd user unit for ``executable`` (systemd.service(5): ``Restart=always`` brings it
    back after a crash, as condor_master would), passing the variables that locate the user's
    config and cloud (never credentials: those stay in their files)."""
    env = "".join(f"Environment={k}={v}\n" for k, v in sorted(environment.items()))
    return ("[Unit]\nDescription=condor_annexd, the annex daemon (condor-annex)\n"
            "After=network-online.target\n\n"
            f"[Service]\nExecStart={executable}\n{env}Restart=always\nRestartSec=5\n\n"
            "[Install]\nWantedBy=default.target\n")


#: Environment variables the unit carries over when set (where the config and pool are).
UNIT_ENVIRONMENT = ("CONDOR_CONFIG", "CONDOR_ANNEX_USER_CONFIG", "AWS_CONFIG_FILE",
                    "AWS_SHARED_CREDENTIALS_FILE", "AWS_PROFILE")


def cmd_unit(args) -> int:
    """``daemon unit``: print the user unit for this installation's condor_annexd."""
    exe = shutil.which("condor_annexd") or os.path.join(os.path.dirname(sys.executable),
                                                        "condor_annexd")
    sys.stdout.write(unit_text(exe, {k: os.environ[k] for k in UNIT_ENVIRONMENT
                                     if os.environ.get(k)}))
    return 0
