"""Prices from the provider for :mod:`condor_annex.reconciler.cost`: each (instance type,
market) asked once per lookup object, an unknown price as None (never zero)."""

from __future__ import annotations

import logging

from condor_annex.errors import AnnexError
from condor_annex.providers.aws.pricing import Price
from condor_annex.providers.base import Provider
from condor_annex.reconciler.cost import MARKET_SPOT

log = logging.getLogger(__name__)


class ProviderPrices:
    """A :data:`~condor_annex.reconciler.cost.PriceLookup` over a provider's
    ``on_demand_price`` / ``spot_price`` (Price List API, Spot price history, the day's cache
    or the shipped snapshot), memoized for its lifetime (one status or one pass).

    Calling it with (instance type, market, zone) returns the :class:`Price` per hour (a Spot
    price in that zone, or the region's lowest for zone ""), or None when no source knows the type
    (``NoPriceError``) or the lookup failed (``ProviderError``; logged)."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self._seen: dict[tuple[str, str, str], Price | None] = {}

    def __call__(self, instance_type: str, market: str, az: str = "") -> Price | None:
        key = (instance_type, market, az)
        if key not in self._seen:
            try:
                self._seen[key] = (self.provider.spot_price(instance_type, az or None)
                                   if market == MARKET_SPOT
                                   else self.provider.on_demand_price(instance_type))
            except AnnexError as e:   # NoPriceError is a BadInputError; ProviderError
                log.info("no %s price of %s%s: %s", market, instance_type,
                         f" in {az}" if az else "", e)
                # A zone EC2 lists no Spot price for: the region's (lowest) one.
                self._seen[key] = self(instance_type, market) if az else None
        return self._seen[key]

    def public_ip_usd_per_hour(self) -> float:
        """One public IPv4 address per hour, or 0.0 when it cannot be read."""
        try:
            price = self.provider.public_ip_price()
            return float(price.usd) if price is not None else 0.0
        except (AnnexError, KeyError, ValueError) as e:
            log.info("no public IPv4 price: %s", e)
            return 0.0
