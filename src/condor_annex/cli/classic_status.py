"""The classic ``-status``: the status table, or with ``-classads`` one ``Annex`` ClassAd per
annex in the text form ``condor_advertise`` reads (as the original printed).
"""

from __future__ import annotations

import re

from condor_annex.cli.classic_context import context, say
from condor_annex.cli.classic_plan import Plan


def _attr_state(state: str) -> str:
    """``"shutting-down"`` -> ``"ShuttingDown"`` (for ``NumInstances<State>``)."""
    return "".join(p.capitalize() for p in re.split(r"[-_\s]+", state) if p)


def _classad_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def classads_text(annexes: dict[str, dict[str, str]]) -> str:
    """Per-annex ``Annex`` ClassAds in the text form ``condor_advertise`` reads.

    Args:
        annexes: annex name -> {instance id: state}, where the state is the EC2 state name or
            ``"in-pool"`` for a running instance with a slot in the collector.

    Returns:
        ``Name = value`` lines, one ad per annex, ads separated by a blank line.
    """
    ads = []
    for name in sorted(annexes):
        by_state: dict[str, list[str]] = {}
        for iid, state in sorted(annexes[name].items()):
            by_state.setdefault(state, []).append(iid)
        lines = ['MyType = "Annex"', f"Name = {_classad_string(name)}",
                 f"TotalInstances = {len(annexes[name])}"]
        for state in sorted(by_state):
            attr = _attr_state(state)
            lines.append(f"NumInstances{attr} = {len(by_state[state])}")
            lines.append(f"{attr}InstancesList = {_classad_string(','.join(by_state[state]))}")
        ads.append("\n".join(lines) + "\n")
    return "\n".join(ads)


def run_status(plan: Plan) -> int:
    """Print the status table, or with ``-classads`` the annexes' ClassAds; returns 0."""
    from condor_annex.cli import render
    from condor_annex.service import annex as svc
    ctx = context(plan)
    rows = svc.annex_status(ctx, plan.annex_name)
    if not plan.classads:
        render.status_table(rows)
        return 0
    instances = svc.annex_instances(ctx, plan.annex_name)
    annexes: dict[str, dict[str, str]] = {}
    for row in rows:
        found = instances.get(row.name, {})
        if not found:
            continue
        not_joined = set(row.not_joined)
        annexes[row.name] = {
            iid: ("in-pool" if inst.state in ("pending", "running") and iid not in not_joined
                  else inst.state)
            for iid, inst in found.items()}
    if not annexes:
        say("Found no instances in any annex.")
        return 0
    say(classads_text(annexes), end="")
    return 0
