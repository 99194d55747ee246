"""Prices at create (issue 12 item 4): the estimate the create prompt shows (count x price x
lease hours, :func:`estimate_for`), and the prices kept in the annex's record in the store
(:func:`prices_to_keep`), so ``status`` computes what was spent at the price of the launch.

A Spot annex's instance count is the fleet's choice: the estimate takes, of its instance
types, the dearest per unit of capacity (an estimate errs high, never low) and as many of it as
the capacity needs.
"""

from __future__ import annotations

import json
import math
from typing import Any

from condor_annex.model import SPOT_API_SPOT_FLEET, AnnexSpec, SpotSpec
from condor_annex.providers.base import Provider
from condor_annex.reconciler.cost import (MARKET_ON_DEMAND, MARKET_SPOT, LeaseEstimate,
                                          lease_estimate)
from condor_annex.reconciler.price_lookup import ProviderPrices


def instance_types(spec: AnnexSpec, spot: SpotSpec | None) -> list[tuple[str, float]]:
    """(instance type, weight) of what the create may launch: the on-demand type (weight 1),
    an EC2 Fleet's overrides, or a Spot Fleet config's launch specifications
    (``InstanceType``, ``WeightedCapacity`` default 1); ``spec.instance_type`` when none."""
    if spot is None:
        return [(spec.instance_type, 1.0)]
    if spot.api == SPOT_API_SPOT_FLEET:
        try:
            specs = json.loads(spot.spot_fleet_config or "{}").get("LaunchSpecifications") or []
        except ValueError:
            specs = []
        found = [(str(s.get("InstanceType") or spec.instance_type),
                  float(s.get("WeightedCapacity") or 1)) for s in specs if isinstance(s, dict)]
        return found or [(spec.instance_type, 1.0)]
    return list(spot.instance_types) or [(spec.instance_type, 1.0)]


def estimate_for(provider: Provider, spec: AnnexSpec,
                 spot: SpotSpec | None = None) -> LeaseEstimate:
    """What the create will cost if it runs its whole lease (``spec.lease_seconds``).

    On-demand: ``spec.count`` instances of ``spec.instance_type`` at the On-Demand price.
    Spot: the type dearest per unit of weight, ceil(capacity / weight) of it, at the Spot
    price.  A type no source knows is in ``unknown_types`` (the total is None), never zero.
    """
    prices = ProviderPrices(provider)
    if spot is None:
        return lease_estimate([(spec.instance_type, spec.count)], MARKET_ON_DEMAND, prices,
                              spec.lease_seconds)
    weighted = instance_types(spec, spot)
    known = [(t, w, prices(t, MARKET_SPOT, "")) for t, w in weighted]
    unknown = [(t, w) for t, w, p in known if p is None]
    if unknown:
        t, w = unknown[0]
    else:
        t, w, _p = max(known, key=lambda k: (k[2].usd if k[2] else 0.0) / max(k[1], 1e-9))
    return lease_estimate([(t, math.ceil(spec.count / max(w, 1e-9)))], MARKET_SPOT, prices,
                          spec.lease_seconds)


def prices_to_keep(provider: Provider, types: list[str], market: str) -> dict[str, Any]:
    """The annex spec's ``launch_prices`` entry (read back by
    :func:`condor_annex.reconciler.cost.launch_prices`): instance type -> ``{"market",
    "usd_per_hour", "source", "as_of"}`` for each type whose price is known (an unknown one is
    left out: ``status`` then says "?")."""
    prices = ProviderPrices(provider)
    kept: dict[str, Any] = {}
    for itype in dict.fromkeys(types):
        price = prices(itype, market, "")
        if price is not None:
            kept[itype] = {"market": market, "usd_per_hour": price.usd, "source": price.source,
                           "as_of": price.as_of}
    return kept
