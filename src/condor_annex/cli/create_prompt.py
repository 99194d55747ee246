"""The modern ``create``'s confirmation (issue 12 item 4): the estimate for the lease as a
table (instance type, count, $/h each, lease, estimate), then "Start it? [y/N]".  Asked only
when standard input is a terminal and neither ``--yes`` nor ``--json`` was given, so scripts
and pipes run as before."""

from __future__ import annotations

import sys
from collections.abc import Callable

from condor_annex.cli import render
from condor_annex.cli.cost_text import estimate_table
from condor_annex.model import AnnexSpec, SpotSpec


def should_ask(args, is_tty: Callable[[], bool] | None = None) -> bool:
    """True when the prompt is shown: stdin is a terminal, no ``--yes``, no ``--json``."""
    if getattr(args, "yes", False) or getattr(args, "json", False):
        return False
    return (is_tty or sys.stdin.isatty)()


def confirm_create(ctx, spec: AnnexSpec, spot: SpotSpec | None,
                   read: Callable[[], str] | None = None) -> bool:
    """Show the estimate and ask; True only for y/yes (any case).  EOF counts as no.

    Raises:
        NotSetUpError: setup has not run (the create would refuse it too).
    """
    from condor_annex.service import create_prices
    est = create_prices.estimate_for(ctx.provider(ctx.setup_outputs()), spec, spot)
    render.console.print(estimate_table(est))
    if est.usd is None:
        render.console.print(f"The price of {', '.join(est.unknown_types)} is unknown: the "
                             "cost of this annex cannot be estimated.", markup=False)
    render.console.print(f"Start annex {spec.name}? [y/N] ", end="", markup=False)
    try:
        answer = (read or sys.stdin.readline)()
    except (EOFError, OSError):
        answer = ""
    return answer.strip().lower() in ("y", "yes")
