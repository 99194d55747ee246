"""The classic ``-setup [ACCESS_KEY_FILE SECRET_KEY_FILE | FROM INSTANCE]`` and
``-check-setup``, with the original tool's messages.
"""

from __future__ import annotations

import re

from condor_annex.cli.classic_context import context, say
from condor_annex.cli.classic_plan import Plan


def run_setup(plan: Plan) -> int:
    """Make (or update) the setup stack; records ``-setup``'s key files as knobs; returns 0."""
    from condor_annex import config
    from condor_annex.service import annex as svc
    ctx = context(plan)
    say("Setting up condor_annex...", end="")
    outputs = svc.setup_cloud(ctx, progress=lambda _status: say(".", end=""))
    say(" complete.")
    if plan.setup_key_files is not None:
        prefix = re.sub(r"[^A-Za-z0-9_./]", "_", outputs.region) + "."
        config.write_block("keys", {
            prefix + "ANNEX_DEFAULT_ACCESS_KEY_FILE": plan.setup_key_files[0],
            prefix + "ANNEX_DEFAULT_SECRET_KEY_FILE": plan.setup_key_files[1]})
    say(f"Setup successful in {outputs.region}: bucket {outputs.bucket}, stack "
        f"{outputs.stack_name}; its settings are in {config.user_config_path()}.")
    if outputs.changes:
        say(f"Updated stack {outputs.stack_name}: " + "; ".join(outputs.changes) + ".")
    return 0


def run_check_setup(plan: Plan) -> int:
    """Check every resource setup made, one line each; returns 0 when all are there, else 1."""
    from condor_annex.service import annex as svc
    rows = svc.check_setup(context(plan))
    say("Checking condor_annex...")
    for resource, ok, detail in rows:
        say(f"Checking for {resource}... {'OK' if ok else 'FAILED'}"
            + ("" if ok or not detail else f" ({detail})"))
    if all(ok for _, ok, _ in rows):
        say("Your setup looks OK.")
        return 0
    say("Your setup is incomplete; run 'condor_annex -setup' again.")
    return 1
