"""The classic commands on a running annex: ``-annex-name N -duration H`` (move its lease,
as ``extend`` does) and ``-annex-name N off`` (end it, as ``off`` does, with the default grace).
"""

from __future__ import annotations

from condor_annex.cli.classic_context import context, say
from condor_annex.cli.classic_plan import Plan


def run_update(plan: Plan) -> int:
    """Move the annex's lease to ``plan.lease_seconds`` from now (``extend_annex``); returns 0.

    Raises:
        UnknownAnnexError: no such annex (the caller names ``-annex-name``).
    """
    from condor_annex.service import annex as svc
    ctx = context(plan)
    ctx.setup_outputs()
    from condor_annex.cli.annex import fleets_stopping_text
    # The classic syntax has no budget flag (the original had none); the budget still
    # refuses a lease it cannot pay for, naming -duration.
    res = svc.extend_annex(ctx, plan.annex_name or "", plan.lease_seconds,
                           duration_flag="-duration")
    say("Lease updated." + fleets_stopping_text(res))
    return 0


def run_off(plan: Plan) -> int:
    """End the annex completely (``off`` with the default grace); prints one line; returns 0.

    Raises:
        UnknownAnnexError: no such annex (the caller names ``-annex-name``).
    """
    from condor_annex.cli.annex import end_annex_with_progress
    from condor_annex.model import DEFAULT_OFF_GRACE_SECONDS
    ctx = context(plan)
    ctx.setup_outputs()
    res = end_annex_with_progress(ctx, plan.annex_name or "", DEFAULT_OFF_GRACE_SECONDS)
    fleets = res.spot_fleet_requests + res.fleets
    graceful = f" ({len(res.left_pool)} left the pool gracefully)" if res.left_pool else ""
    say(f"Annex {res.annex_name}: terminated {len(res.terminated)} instance(s){graceful}; lease "
        f"{'deleted' if res.lease_deleted else 'absent'}; bundle "
        f"{'deleted' if res.bundle_deleted else 'absent'}"
        + (f"; spot fleet(s) {', '.join(fleets)} cancelled" if fleets else "") + ".")
    return 0
