"""``extend`` and the budget (issue 12 item 5): ``extend NAME --budget USD`` changes the
annex's budget, and an ``extend`` to a later lease end checks that the budget pays for it.

Both compute the annex's spend now as condor_annexd does
(:func:`condor_annex.reconciler.budget.spend_of`: its instances as EC2 lists them, the ended
ones until the store saw them end, the cost kept of those EC2 no longer lists) and refuse,
before anything changes, with one line naming the flag (exit 2):

* a new budget below what was spent plus one minute of the current rate (the annex would be
  drained at once; ``off`` ends an annex);
* a later lease end whose projection (spent + rate x the time to it) exceeds the budget,
  unless ``--budget`` raises it enough in the same command (an extend that the budget cannot
  pay for would only end by the budget before its lease);
* any change to an annex its budget is already draining.

A changed budget is written to the store (the reconciler's rules read it) and to tag
``htcondor:Budget`` of every live instance (the lease sweep's backstop reads it; instances
that a maintain fleet launches later carry the budget of the create: the sweep takes the
largest one of an annex).  A growth stop of the budget is lifted by the next pass once the
projection fits (:mod:`condor_annex.reconciler.budget`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

from condor_annex.errors import AnnexError, BadInputError
from condor_annex.model import TAG_BUDGET, utcnow
from condor_annex.providers.base import Provider
from condor_annex.reconciler.annex_status import ended_times
from condor_annex.reconciler.budget import (END_AHEAD_S, Billed, budget_of, drain_of, ended_of,
                                            prices_of, spend_of, tag_text)
from condor_annex.reconciler.cost import MARKET_ON_DEMAND, MARKET_SPOT
from condor_annex.reconciler.price_lookup import ProviderPrices
from condor_annex.service.context import Context
from condor_annex.state.records import AnnexRecord
from condor_annex.state.store import open_store


@dataclass(frozen=True)
class BudgetCheck:
    """An annex's budget as an ``extend`` leaves it.

    Attributes:
        budget_usd: the budget after the command, USD.
        spent_usd: spent so far, USD.
        usd_per_hour: the rate now.
        projected_usd: spent + the rate until the lease end after the command.
        changed: True when ``--budget`` gave a new budget.
        prices: (instance type, USD per hour) it is computed with.
    """

    budget_usd: float
    spent_usd: float
    usd_per_hour: float
    projected_usd: float
    changed: bool
    prices: tuple[tuple[str, float], ...]


def recheck(ctx: Context, provider: Provider, name: str, lease_end: datetime, *,
            new_budget: float = 0.0, extending: bool = False,
            duration_flag: str = "DURATION") -> BudgetCheck | None:
    """Check an ``extend`` against the annex's budget (see the module docstring); changes
    nothing.

    Args:
        lease_end: the lease end after the command (aware UTC).
        new_budget: ``--budget`` (USD), or 0.0 when not given.
        extending: True when the command moves the lease end later.
        duration_flag: how the user gave the lease (``DURATION``, classic ``-duration``).

    Returns:
        :class:`BudgetCheck`, or None when the annex has no budget and none is given.

    Raises:
        BadInputError: a refusal of the module docstring, one line naming the flag.
        ProviderError: DescribeInstances or a price lookup failed.
    """
    record = _record(ctx, name)
    if record is None:
        if new_budget > 0:
            raise BadInputError(f"--budget: annex '{name}' is not in this state file (made "
                                "from another machine?); run the extend there; nothing was "
                                "changed")
        return None
    budget = new_budget or budget_of(record.spec)
    if budget <= 0:
        return None
    flag = "--budget" if new_budget > 0 else duration_flag
    if drain_of(record.spec) is not None:
        raise BadInputError(f"{flag}: annex '{name}' is already ending by its budget (its "
                            "nodes are leaving the pool); nothing was changed")
    listed = provider.query_instances(name, include_terminated=True)
    prices = prices_of(record.spec) or _look_up(provider, record, listed)
    with open_store(ctx.knobs) as store:
        ended = ended_times(store.last_transitions(name))
    billed = [Billed(iid, i.state, i.launch_time, i.instance_type, ended.get(iid))
              for iid, i in listed.items() if i.launch_time is not None]
    now = utcnow()
    spent, rate = spend_of(billed, prices, now, recorded=ended_of(record.spec))
    least = spent + rate * END_AHEAD_S / 3600.0
    if new_budget > 0 and new_budget < least:
        raise BadInputError(f"--budget: ${new_budget:g} is less than the ${spent:.2f} annex "
                            f"'{name}' has spent plus one minute at ${rate:.2f}/h; give at "
                            f"least ${least:.2f} (or end it: condor_annex off {name}); nothing "
                            "was changed")
    left_s = max((lease_end - now).total_seconds(), 0.0)
    projected = spent + rate * left_s / 3600.0
    if extending and projected > budget:
        how = (f"add --budget {projected:.2f}" if duration_flag == "DURATION" else
               f"raise it first: condor_annex extend {name} --budget {projected:.2f}")
        raise BadInputError(
            f"{duration_flag}: annex '{name}' would cost ${projected:.2f} by the new lease end "
            f"at ${rate:.2f}/h, more than its ${budget:.2f} budget; {how}, or extend less; "
            "nothing was changed")
    return BudgetCheck(budget, spent, rate, projected, new_budget > 0,
                       tuple(sorted(prices.items())))


def apply(ctx: Context, provider: Provider, name: str, check: BudgetCheck) -> None:
    """Write a changed budget: tag ``htcondor:Budget`` of the live instances, then the
    store's spec (``budget_usd``, ``budget_prices``).

    Raises:
        ProviderError: CreateTags failed (the store is not changed).
        AnnexError: the state file cannot be written.
    """
    if not check.changed:
        return
    record = _record(ctx, name)
    spent_ended = sum(ended_of(record.spec).values()) if record is not None else 0.0
    live = [iid for iid, i in provider.query_instances(name).items() if i.alive]
    if live:
        provider.tag_instances(live, {TAG_BUDGET: tag_text(check.budget_usd, check.prices,
                                                           spent_ended)})
    try:
        with open_store(ctx.knobs) as store:
            store.update_spec(name, {"budget_usd": check.budget_usd,
                                     "budget_prices": [list(p) for p in check.prices]})
    except (sqlite3.Error, OSError) as e:
        raise AnnexError(f"annex '{name}': its instances carry the new budget but the state "
                         f"file could not be written ({e}); run the same extend again") from None


def _record(ctx: Context, name: str) -> AnnexRecord | None:
    """The live annex's record, or None."""
    with open_store(ctx.knobs) as store:
        record = store.annex(name)
    return record if record is not None and record.ended_at is None else None


def _look_up(provider: Provider, record: AnnexRecord, listed: dict) -> dict[str, float]:
    """Prices of an annex that kept none (created without a budget): its instances' types
    and its spec's, On-Demand or (a Spot annex) Spot.

    Raises:
        BadInputError: no source knows a type's price (never taken as zero).
    """
    market = MARKET_SPOT if record.spec.get("spot") else MARKET_ON_DEMAND
    types = {i.instance_type for i in listed.values() if i.instance_type}
    if record.spec.get("instance_type"):
        types.add(str(record.spec["instance_type"]))
    lookup = ProviderPrices(provider)
    prices: dict[str, float] = {}
    for itype in sorted(types):
        price = lookup(itype, market)
        if price is None:
            raise BadInputError(f"--budget: no price is known for instance type {itype}; a "
                                "budget needs one; nothing was changed")
        prices[itype] = price.usd
    return prices
