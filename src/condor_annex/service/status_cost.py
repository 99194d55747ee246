"""The cost columns of a live ``status`` (issue 12 item 4): each annex's rate now, what it has
spent and its instances' prices (:mod:`condor_annex.reconciler.cost`), with the prices kept at
create and the end times the state store holds.  (``status`` from the store reads what the
pass computed: :func:`condor_annex.reconciler.reconcile.statuses`.)
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any

from condor_annex.errors import AnnexError
from condor_annex.model import CloudInstance, utcnow
from condor_annex.providers.base import Provider
from condor_annex.reconciler.annex_status import AnnexStatus, add_cost, ended_times
from condor_annex.reconciler.cost import annex_cost, launch_prices
from condor_annex.reconciler.price_lookup import ProviderPrices
from condor_annex.service.context import Context
from condor_annex.state.store import default_path, open_store

log = logging.getLogger(__name__)

#: The clock of :func:`add_costs` (a seam for tests: spent grows with it).
clock: Callable[[], datetime] = utcnow


def add_costs(ctx: Context, provider: Provider, rows: list[AnnexStatus],
              by_annex: dict[str, dict[str, CloudInstance]]) -> None:
    """Fill each row's ``usd_per_hour``, ``usd_spent``, ``instances`` and price notes.

    Args:
        ctx: settings (the state file: prices at create, lifecycle states, end times; a
            state file that cannot be read leaves current prices and no end times).
        provider: where prices come from (``on_demand_price``, ``spot_price``,
            ``public_ip_price``).
        rows: the status rows, changed in place.
        by_annex: annex -> its instances as EC2 listed them (any state).
    """
    if not rows:
        return
    prices = ProviderPrices(provider)
    ip = prices.public_ip_usd_per_hour()
    now = clock()
    kept = _from_store(ctx, [r.name for r in rows])
    for st in rows:
        spec, states, ended = kept.get(st.name, ({}, {}, {}))
        add_cost(st, annex_cost(by_annex.get(st.name, {}), prices, now,
                                at_launch=launch_prices(spec), ended_at=ended,
                                ip_usd_per_hour=ip), states)


def _from_store(ctx: Context, names: list[str]
                ) -> dict[str, tuple[dict[str, Any], dict[str, str], dict[str, datetime]]]:
    """annex -> (its spec, instance id -> lifecycle state, instance id -> end time)."""
    if not default_path(ctx.knobs).exists():
        return {}
    out = {}
    try:
        with open_store(ctx.knobs) as store:
            for name in names:
                record = store.annex(name)
                out[name] = (record.spec if record else {},
                             {r.instance_id: r.state for r in store.instances(name)},
                             ended_times(store.last_transitions(name)))
    except (AnnexError, sqlite3.Error, OSError) as e:
        log.info("status: prices at create not read from the state file: %s", e)
    return out
