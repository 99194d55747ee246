"""What a budgeted create checks and keeps before anything is made in the cloud (issue 12
item 5): the budget (``--budget``, else the knob ``ANNEX_DEFAULT_BUDGET``), the price of each
instance type the annex may launch (On-Demand, or Spot for a Spot annex: the provider's price
source, :mod:`condor_annex.providers.aws.pricing`), and that the budget buys at least one
instance-minute.  The prices go into the annex's spec (the store: the reconciler's budget rules,
:mod:`condor_annex.reconciler.budget`) and into the instances' tag ``htcondor:Budget`` (the
lease sweep's backstop, :mod:`condor_annex.lease.handler`, which reads nothing else).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Sequence

from condor_annex.errors import AnnexError, BadInputError
from condor_annex.model import (SPOT_API_SPOT_FLEET, TAG_BUDGET, AnnexSpec, SpotSpec,
                                parse_budget)
from condor_annex.providers.aws.pricing import NoPriceError
from condor_annex.reconciler.budget import budget_of, tag_text
from condor_annex.service.common import outputs_or_none
from condor_annex.service.context import Context
from condor_annex.state.store import open_store

#: Knob giving every create a budget, USD, when ``--budget`` is not given; none by default.
BUDGET_KNOB = "ANNEX_DEFAULT_BUDGET"
#: Knob: the user's cap per UTC day over all of their annexes, USD (condor_annexd enforces
#: it: :func:`condor_annex.reconciler.budget.budget_rules`); none by default.
PER_DAY_KNOB = "ANNEX_BUDGET_PER_DAY"
#: The instances' tag read by the lease sweep: ``"<budget USD> <type>=<USD/h> ..."``.
BUDGET_TAG = TAG_BUDGET
#: EC2's longest tag value, characters.
TAG_VALUE_MAX = 256
#: Room kept in the tag for what ended instances cost (`` spent=<USD>``, written by
#: condor_annexd: :class:`condor_annex.reconciler.budget_actions.RecordBudgetSpend`).
SPENT_ROOM = len(" spent=1000000.000000")


def annex_types(spec: AnnexSpec, spot: SpotSpec | None) -> list[str]:
    """The instance types a create may launch: ``--instance-types`` of an EC2 Fleet, the
    ``InstanceType`` of each of a Spot Fleet config's LaunchSpecifications (else the spec's
    type), else ``--instance-type``."""
    if spot is None:
        return [spec.instance_type]
    if spot.api != SPOT_API_SPOT_FLEET:
        return [t for t, _w in spot.instance_types]
    config = json.loads(spot.spot_fleet_config or "{}")
    found = [str(s.get("InstanceType")) for s in config.get("LaunchSpecifications") or ()
             if isinstance(s, dict) and s.get("InstanceType")]
    return found or [spec.instance_type]


def with_budget(ctx: Context, spec: AnnexSpec, spot: SpotSpec | None = None) -> AnnexSpec:
    """The spec with its budget and the prices it is computed with, or ``spec`` unchanged when
    the create has no budget.  Only prices are asked for (the price source's reads).

    Args:
        ctx: settings (the knob, the provider).
        spec: the validated create; ``budget_usd`` 0.0 means the budget the live annex of that
            name has (adding to it keeps its budget), else the knob's, else none.
        spot: the Spot settings of a Spot create (Spot prices then), or None (On-Demand).

    Returns:
        the spec with ``budget_usd`` and ``budget_prices`` ((type, USD per hour), ...) set.

    Raises:
        BadInputError: a malformed knob value (naming ``ANNEX_DEFAULT_BUDGET`` or
            ``ANNEX_BUDGET_PER_DAY``); a type whose
            price no source knows (naming the type; never taken as zero); a budget smaller
            than one minute of the cheapest type (naming ``--budget`` or the knob); a tag
            value too long for EC2 (too many types).  Nothing is created.
    """
    from condor_annex import config, validate
    budget, flag = spec.budget_usd, "--budget"
    if budget <= 0:
        budget = kept_budget(ctx.knobs, spec.name)
    if budget <= 0:
        text = config.knob(ctx.knobs, BUDGET_KNOB, ctx.aws.region).strip()
        if text:
            budget, flag = parse_budget(text, BUDGET_KNOB), BUDGET_KNOB
    text = config.knob(ctx.knobs, PER_DAY_KNOB, ctx.aws.region).strip()
    per_day = parse_budget(text, PER_DAY_KNOB) if text else 0.0
    if budget <= 0 and per_day <= 0:
        return spec
    if budget <= 0:
        flag = PER_DAY_KNOB
    if budget > 0 and len(spec.tags) >= validate.MAX_USER_TAGS:
        raise BadInputError(f"--tag: a budgeted annex takes at most {validate.MAX_USER_TAGS - 1}"
                            f" tags (tag {BUDGET_TAG} is one of EC2's 50); give fewer")
    provider = ctx.provider(outputs_or_none(ctx))
    prices: dict[str, float] = {}
    for itype in dict.fromkeys(annex_types(spec, spot)):
        try:
            price = provider.spot_price(itype) if spot is not None \
                else provider.on_demand_price(itype)
        except NoPriceError as e:
            raise BadInputError(f"{flag}: no price is known for instance type {itype} in "
                                f"{ctx.aws.region} ({e}); a budget needs one: choose another "
                                "type or create without a budget") from None
        prices[itype] = price.usd
    minute = min(prices.values()) / 60.0
    cheapest = min(prices, key=lambda t: prices[t])
    for usd, name in ((budget, flag), (per_day, PER_DAY_KNOB)):
        if 0 < usd < minute:
            raise BadInputError(f"{name}: ${usd:g} buys less than one minute of {cheapest} "
                                f"(${prices[cheapest]:g} an hour); give at least "
                                f"${minute:.4f}")
    out = dataclasses.replace(spec, budget_usd=max(budget, 0.0), budget_per_day_usd=per_day,
                              budget_prices=tuple(sorted(prices.items())))
    if len(budget_tag_value(out)) + SPENT_ROOM > TAG_VALUE_MAX:
        raise BadInputError(f"--instance-types: a budgeted annex takes at most about 9 "
                            f"instance types (tag {BUDGET_TAG} holds their prices); give fewer")
    return out


def kept_budget(knobs: dict[str, str], name: str) -> float:
    """The budget (USD) the store keeps for the live annex ``name``, or 0.0 (none, no such
    live annex, or a store that cannot be read: the create's own recording then says why)."""
    try:
        with open_store(knobs) as store:
            record = store.annex(name)
    except (sqlite3.Error, OSError, AnnexError):
        return 0.0
    if record is None or record.ended_at is not None:
        return 0.0
    return budget_of(record.spec)


def budget_tag_value(spec: AnnexSpec) -> str:
    """Tag ``htcondor:Budget``'s value at create: the budget and each type's price,
    space-separated (``"2.5 m5.large=0.096 m5.xlarge=0.192"``; USD, USD per hour;
    :func:`condor_annex.reconciler.budget.tag_text`, which later adds ``spent=<USD>``)."""
    return tag_text(spec.budget_usd, spec.budget_prices)


def budget_tag(spec: AnnexSpec) -> str:
    """The launch requests' ``budget`` (tag ``htcondor:Budget`` on the instances), "" when the
    annex has no budget."""
    if spec.budget_usd <= 0 or not spec.budget_prices:
        return ""
    return budget_tag_value(spec)


__all__: Sequence[str] = ("BUDGET_KNOB", "BUDGET_TAG", "annex_types", "budget_tag_value",
                          "budget_tag", "kept_budget", "PER_DAY_KNOB", "with_budget")
