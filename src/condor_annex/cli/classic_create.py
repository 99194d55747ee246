"""The classic create: ``-annex-name N -count K`` / ``-slots W``, with the original tool's
confirmation prompt (unless ``-yes``) and its messages.

Everything ``create_annex`` would refuse is refused before the prompt, with the classic flag
names (bad input, exit 2); a "no" at the prompt prints how to change the request and exits 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from condor_annex.cli.classic_context import context, say
from condor_annex.cli.classic_plan import Plan
from condor_annex.cli.classic_values import read_spot_fleet_config
from condor_annex.cli.cost_text import estimate_line
from condor_annex.errors import BadInputError, LeaseWouldShortenError
from condor_annex.model import AnnexSpec, SpotSpec


def confirm(spec: AnnexSpec, read: Callable[[], str] | None = None, *,
            spot: bool = False, estimate: str = "") -> bool:
    """Ask as the original did; True only for "yes" (any case).  EOF counts as no.

    Args:
        spec: the request being confirmed.
        read: returns one line of the answer (default: a line from stdin).
        spot: the request is a spot fleet (``spec.count`` is its weighted capacity).
        estimate: the cost estimate's line (issue 12), shown after the original's sentence.
    """
    plural = "" if spec.count == 1 else "s"
    what = (f"{spec.count} spot slot{plural} (Spot Fleet weighted capacity)" if spot else
            f"{spec.count} {spec.instance_type} on-demand instance{plural}")
    say(f"Will request {what} for {spec.lease_seconds / 3600:.2f} hours. Each instance will "
        f"terminate after being idle for {spec.idle_seconds / 3600:.2f} hours.")
    if estimate:
        say(estimate)
    say("Is that OK? (Type 'yes' or 'no'): ", end="")
    try:
        answer = (read or sys.stdin.readline)()
    except (EOFError, OSError):
        answer = ""
    return answer.strip().lower() == "yes"


def _spot_with_knobs(ctx, spec: AnnexSpec, spot: SpotSpec) -> SpotSpec:
    """Fill a spot fleet's config from ``ANNEX_DEFAULT_SFR_CONFIG_FILE`` when no
    ``-aws-spot-fleet-config-file`` was given, and its role from
    ``ANNEX_DEFAULT_SFR_IAM_FLEET_ROLE``; check what the service would refuse
    (:func:`service.annex.check_spot`).

    Raises:
        BadInputError: no config, a bad one, no fleet role, or no AMI for a specification.
    """
    import dataclasses

    from condor_annex import config
    from condor_annex.service import annex as svc
    flag = "-aws-spot-fleet-config-file"
    text = spot.spot_fleet_config
    if not text:
        path = config.knob(ctx.knobs, "ANNEX_DEFAULT_SFR_CONFIG_FILE", ctx.aws.region)
        if not path:
            raise BadInputError(f"{flag}: a spot fleet needs its Spot Fleet request config; "
                                f"give {flag} FILE (or - for stdin), or set "
                                "ANNEX_DEFAULT_SFR_CONFIG_FILE")
        text = read_spot_fleet_config(str(Path(path).expanduser()),
                                      "ANNEX_DEFAULT_SFR_CONFIG_FILE")
    role = config.knob(ctx.knobs, "ANNEX_DEFAULT_SFR_IAM_FLEET_ROLE", ctx.aws.region)
    spot = dataclasses.replace(spot, spot_fleet_config=text, iam_fleet_role=role)
    svc.check_spot(ctx, spec, spot)
    return spot


def run_create(plan: Plan) -> int:
    """Create the annex of ``plan`` (mode ``create``) after the prompt; returns the exit status
    (1 when the user did not confirm).

    Raises:
        BadInputError: what the service would refuse (no setup, no collector, no AMI, a spot
            config problem, a lease the add would shorten), named with the classic flags.
    """
    from condor_annex.service import annex as svc, create_prices
    spec = plan.spec
    assert spec is not None
    ctx = context(plan)
    # What create_annex would refuse, refused before the prompt (and with classic flag names).
    ctx.setup_outputs()
    ctx.require_collector()
    spot = _spot_with_knobs(ctx, spec, plan.spot) if plan.spot is not None else None
    from condor_annex.cli.classic_autoscale import classic_bounds
    scaled = classic_bounds(ctx.knobs, ctx.aws.region, spec) if spot is None else None
    if scaled is not None:   # issue 13: ANNEX_AUTOSCALE_MAX (docs/autoscale.md)
        spec = scaled[0]
    if spot is None and not (spec.image_id or ctx.image_id):
        raise BadInputError("-aws-on-demand-ami-id: no AMI is configured; give "
                            "-aws-on-demand-ami-id ami-... or set ANNEX_DEFAULT_ODI_IMAGE_ID")
    if not plan.yes and not confirm(spec, spot=spot is not None, estimate=estimate_line(
            create_prices.estimate_for(ctx.provider(ctx.setup_outputs()), spec, spot))):
        say("Not starting an annex; user did not confirm.")
        say()
        if spot is None:
            say("To change the instance type, use the -aws-on-demand-instance-type flag.")
        else:
            say("To change the spot fleet's size, use the -slots flag.")
            say("To change its instance types, edit the -aws-spot-fleet-config-file file.")
        say("To change the lease duration, use the -duration flag.")
        say("To change how long an idle instance will wait before terminating itself, use "
            "the -idle flag.")
        return 1
    say("Starting annex...")
    try:
        if scaled is not None:
            from condor_annex.service.autoscale_create import create_autoscaled
            result = create_autoscaled(ctx, spec, scaled[1])
            identity = result.client_token
        elif spot is None:
            result = svc.create_annex(ctx, spec)
            identity = result.client_token
        else:
            result = svc.create_spot_annex(ctx, spec, spot)
            identity = result.fleet_id   # the original named the spot fleet request id
    except LeaseWouldShortenError as e:
        raise BadInputError(
            f"-duration: annex '{e.annex_name}' ends {e.current_end:%Y-%m-%d %H:%M:%S} UTC; "
            "adding instances never ends it earlier (to set its lease on its own: "
            f"condor_annex -annex-name {e.annex_name} -duration HOURS)") from None
    say(f"Annex started. Its identity with the cloud provider is '{identity}'. "
        "It will take about three minutes for the new machines to join the pool.")
    return 0
