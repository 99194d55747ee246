"""What every classic run needs: the service context built with the plan's overrides, and
the plain output the original tool printed (stdout, flushed line by line; no rich markup).
"""

from __future__ import annotations

import re
import sys

from condor_annex.cli.classic_plan import Plan


def context(plan: Plan):
    """Build the service context with the plan's overrides and check the key files now, so a
    bad key file is bad input (exit 2) and not a failure half-way."""
    from condor_annex import config
    from condor_annex.service.context import Context

    knobs = config.read_knobs()
    region = plan.region or knobs.get("ANNEX_DEFAULT_AWS_REGION") or "us-east-1"
    prefix = re.sub(r"[^A-Za-z0-9_./]", "_", region) + "."
    for name, value in plan.knob_overrides.items():
        knobs[prefix + name] = value
    ctx = Context.load(region=plan.region, knobs=knobs, **plan.aws_overrides)
    ctx.aws.credentials()
    return ctx


def say(text: str = "", end: str = "\n") -> None:
    """Print ``text`` + ``end`` on stdout at once (the prompt has no newline)."""
    sys.stdout.write(text + end)
    sys.stdout.flush()
