"""What AWS charges: On-Demand and Spot prices of instance types, EBS gp3 storage and public
IPv4 addresses, in US dollars, with where each price came from.

Sources, in order of preference:

1. **The day's cache**: ``<user config dir>/cache/prices-<region>-<YYYY-MM-DD>.json`` (UTC day;
   the user config dir is that of ``~/.condor/user_config``, moved by
   ``CONDOR_ANNEX_USER_CONFIG``).  Only API answers are cached, so a fallback to the snapshot
   never hides the API's recovery; a new day starts a new file, and writing it removes the
   region's earlier ones.
2. **The AWS APIs**:

   * On-Demand and EBS prices: the AWS Price List Query API, ``pricing`` GetProducts
     (docs.aws.amazon.com/aws-cost-management/latest/APIReference/API_pricing_GetProducts.html;
     "Finding services and products using AWS Price List Query API",
     docs.aws.amazon.com/awsaccountbilling/latest/aboutv2/using-price-list-query-api.html).
     Its endpoint exists only in us-east-1, ap-south-1 and eu-central-1 ("The AWS Region is the
     API endpoint for the Price List Query API. The endpoints aren't related to product or
     service attributes"): the client talks to the account's region when it is one of those,
     else to us-east-1, and the product's region is a filter (``regionCode``).  Every filter is
     ``TERM_MATCH`` on a product attribute of ServiceCode ``AmazonEC2`` (the attribute names of
     the EC2 offer file, "Offer File Definitions" in the Billing user guide):
     an instance is ``instanceType``, ``regionCode``, ``operatingSystem`` = ``Linux``,
     ``tenancy`` = ``Shared``, ``preInstalledSw`` = ``NA``, ``capacitystatus`` = ``Used`` (not
     the reservation or unused-capacity-reservation rows), ``operation`` = ``RunInstances``
     (plain Linux/UNIX; RHEL, SUSE and Ubuntu Pro have their own operation codes); gp3 storage
     is ``productFamily`` = ``Storage``, ``volumeApiName`` = ``gp3``, ``regionCode``.  Each
     ``PriceList`` entry is a JSON *string* holding one product and its terms; the price is
     ``terms.OnDemand.<offer>.priceDimensions.<rate>.pricePerUnit.USD`` (unit ``Hrs`` for
     instances, ``GB-Mo`` for storage).  Several matching products with different prices: the
     highest is taken (a budget errs on the safe side).
   * Spot prices: EC2 DescribeSpotPriceHistory
     (docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeSpotPriceHistory.html) for
     ``ProductDescriptions=["Linux/UNIX"]`` with ``StartTime`` = now (``EndTime`` "defaults to
     the current time"): "When you specify a start and end time, the operation returns the
     prices of the instance types within that time range. It also returns the last price change
     before the start time, which is the effective price as of the start time."  The newest
     entry per Availability Zone is its price now.
   * Public IPv4 addresses: the shipped snapshot only (AWS charges the same
     $0.005 per in-use address-hour in every commercial region since 2024-02-01,
     aws.amazon.com/vpc/pricing, "Public IPv4 Address" tab).

3. **The shipped snapshot** (``data/prices-<date>.json`` in this package): when no API answers
   (no permission, throttled, unreachable, a server error), published list prices of common
   instance types in a few regions, with the snapshot's date.  For Spot, the snapshot holds no
   Spot market: the On-Demand price stands in (a Spot Instance never costs more than On-Demand
   under the default maximum price; an estimate errs high, never low).

Every answer is a :class:`Price` saying its source and date, so ``status`` can show both.  A
price is never guessed: an instance type no source knows raises :class:`NoPriceError` naming
it.  API calls make one attempt each (``make_client(fast_fail=True)``): a lookup has a fallback,
and botocore's backoff (up to ten attempts, 20 s a wait) would hold up ``status`` and ``create``
for minutes while AWS's pricing endpoint is down.

The IAM actions needed are ``pricing:GetProducts`` and ``ec2:DescribeSpotPriceHistory`` (the
shipped policy allows both; neither takes resource-level permissions).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from condor_annex import config
from condor_annex.config import AwsSettings
from condor_annex.errors import BadInputError, ProviderError
from condor_annex.providers.aws.errors import aws_errors
from condor_annex.providers.aws.session import make_client

__all__ = ["NoPriceError", "Price", "PriceSource", "SNAPSHOT_FILE", "price_list_region",
           "parse_on_demand"]

log = logging.getLogger(__name__)

#: The shipped snapshot (package data), ``as_of`` inside.
SNAPSHOT_FILE = "prices-2026-11-30.json"
#: Regions with a Price List Query API endpoint (API_pricing_GetProducts, "Endpoints").
PRICE_LIST_REGIONS = ("us-east-1", "ap-south-1", "eu-central-1")
#: Where each answer came from (:attr:`Price.source`).
SOURCE_PRICE_LIST = "price-list"
SOURCE_SPOT_HISTORY = "spot-price-history"
SOURCE_SNAPSHOT = "snapshot"
#: DescribeSpotPriceHistory product description of Linux instances in a VPC (every instance
#: today: EC2-Classic is gone, and "Linux/UNIX" covers VPC instances in its answers).
SPOT_PRODUCT = "Linux/UNIX"
#: :attr:`Price.note` of an On-Demand price standing in for a Spot price EC2 could not give.
SPOT_STAND_IN = "On-Demand price standing in for Spot (EC2's Spot prices unavailable)"


class NoPriceError(BadInputError):
    """No source knows a price for an instance type in a region (never guessed as zero).

    Attributes:
        instance_type: the type, as given (``""`` for EBS storage).
        region: the region asked about.
        market: ``"on-demand"``, ``"spot"`` or ``"EBS gp3"``.
    """

    def __init__(self, instance_type: str, region: str, market: str, why: str) -> None:
        what = f"instance type '{instance_type}'" if instance_type else "storage"
        super().__init__(f"no {market} price known for {what} in {region}: {why}")
        self.instance_type = instance_type
        self.region = region
        self.market = market


@dataclass(frozen=True)
class Price:
    """One price and where it came from.

    Attributes:
        usd: US dollars per :attr:`unit`.
        unit: ``"hour"`` (instances, IPv4 addresses) or ``"GB-month"`` (EBS storage).
        source: ``"price-list"`` (Price List Query API), ``"spot-price-history"`` (EC2
            DescribeSpotPriceHistory) or ``"snapshot"`` (shipped with the package).
        as_of: the UTC day (``YYYY-MM-DD``) the API answered, or the snapshot's date.
        cached: True when the answer was read from the day's cache (no API call).
        az: for a Spot price, the Availability Zone it is of; else ``""``.
        note: ``""``, or what to tell the user about it (:data:`SPOT_STAND_IN`).
    """

    usd: float
    unit: str
    source: str
    as_of: str
    cached: bool = False
    az: str = ""
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """The price as a JSON-ready dict (the fields above)."""
        return dataclasses.asdict(self)


def price_list_region(region: str) -> str:
    """The Price List Query API endpoint region to ask about ``region``: ``region`` itself when
    it has an endpoint, else us-east-1."""
    return region if region in PRICE_LIST_REGIONS else "us-east-1"


def parse_on_demand(price_list: list[str]) -> list[tuple[float, str]]:
    """The On-Demand prices of a GetProducts ``PriceList``.

    Args:
        price_list: GetProducts' ``PriceList``: one JSON string per product.

    Returns:
        ``(USD per unit, unit)`` for every OnDemand price dimension with a USD price (unit as
        AWS writes it: ``Hrs``, ``GB-Mo``), in the order found.  Zero-priced dimensions
        (free tiers' first range) are skipped only when another dimension has a price.

    Raises:
        ValueError: an entry is not JSON, or a price not a finite number >= 0.
    """
    found: list[tuple[float, str]] = []
    for entry in price_list:
        product = json.loads(entry) if isinstance(entry, str) else entry
        for term in (product.get("terms", {}).get("OnDemand") or {}).values():
            for dim in (term.get("priceDimensions") or {}).values():
                usd = (dim.get("pricePerUnit") or {}).get("USD")
                if usd is None:
                    continue
                value = float(usd)
                if not math.isfinite(value) or value < 0:
                    raise ValueError(f"price {usd!r} of {dim.get('rateCode', '?')}")
                found.append((value, dim.get("unit", "")))
    priced = [f for f in found if f[0] > 0]
    return priced or found


def _today() -> date:
    return datetime.now(timezone.utc).date()


class PriceSource:
    """Prices for one account's settings, cached per region and UTC day.  Thread-safe.

    Args:
        settings: how to reach AWS (region, endpoint, key files); the region of each lookup
            is its own argument.
        cache_dir: where the day files go; default ``<user config dir>/cache``.
        today: the UTC day (for tests); default the clock's.
        snapshot: the snapshot document (for tests); default the shipped one.
    """

    def __init__(self, settings: AwsSettings, *, cache_dir: Path | None = None,
                 today: Callable[[], date] = _today,
                 snapshot: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.cache_dir = cache_dir or config.user_config_path().parent / "cache"
        self.today = today
        self._snapshot = snapshot
        self._lock = threading.Lock()

    # --- public -------------------------------------------------------------------------------

    def on_demand_usd_per_hour(self, region: str, instance_type: str) -> Price:
        """The On-Demand Linux price of ``instance_type`` in ``region``.

        Returns:
            USD per hour (unit ``"hour"``), from the cache, the Price List or the snapshot.

        Raises:
            NoPriceError: the Price List knows no such product in the region, or it could not
                be asked and the snapshot lacks the type.
        """
        cached = self._cached(region, "on_demand", instance_type)
        if cached is not None:
            return Price(**{**cached, "cached": True})
        try:
            prices = self._get_products(region, [
                ("instanceType", instance_type), ("regionCode", region),
                ("operatingSystem", "Linux"), ("tenancy", "Shared"), ("preInstalledSw", "NA"),
                ("capacitystatus", "Used"), ("operation", "RunInstances")])
        except ProviderError as exc:
            return self._snapshot_on_demand(region, instance_type, exc)
        hourly = [usd for usd, unit in prices if unit.lower().startswith("hr")]
        if not hourly:
            raise NoPriceError(instance_type, region, "on-demand",
                               "the AWS Price List has no Linux On-Demand product of that "
                               "type there (a misspelt type, or not offered in the region?)")
        price = Price(max(hourly), "hour", SOURCE_PRICE_LIST, self._day())
        self._store(region, "on_demand", instance_type, price)
        return price

    def spot_prices(self, region: str, instance_type: str) -> dict[str, Price]:
        """The Spot price now of ``instance_type`` in each Availability Zone of ``region``
        that offers it.

        Returns:
            AZ -> price (USD per hour).  When EC2 could not be asked: ``{"": price}``, the
            On-Demand price standing in (see the module docstring).

        Raises:
            NoPriceError: EC2 has no Spot price of the type in the region (not offered, or a
                misspelt type), or it could not be asked and no On-Demand price is known.
        """
        cached = self._cached(region, "spot", instance_type)
        if cached is not None:
            return {az: Price(**{**p, "cached": True}) for az, p in cached.items()}
        try:
            latest = self._spot_history(region, instance_type)
        except ProviderError as exc:
            log.info("spot prices unavailable (%s); using the On-Demand price", exc)
            od = self.on_demand_usd_per_hour(region, instance_type)
            return {"": dataclasses.replace(od, note=SPOT_STAND_IN)}
        if not latest:
            raise NoPriceError(instance_type, region, "spot",
                               "EC2 has no Linux/UNIX Spot price of that type there (a misspelt "
                               "type, or not offered in the region?)")
        day = self._day()
        found = {az: Price(usd, "hour", SOURCE_SPOT_HISTORY, day, az=az)
                 for az, usd in sorted(latest.items())}
        self._store(region, "spot", instance_type, {az: p for az, p in found.items()})
        return found

    def spot_usd_per_hour(self, region: str, instance_type: str, az: str | None = None) -> Price:
        """The Spot price now of ``instance_type``: in ``az``, or the lowest of the region's.

        Raises:
            NoPriceError: as :meth:`spot_prices`, or ``az`` has no Spot price of the type.
        """
        prices = self.spot_prices(region, instance_type)
        if "" in prices:   # the On-Demand stand-in holds for every AZ
            return prices[""]
        if az:
            if az not in prices:
                raise NoPriceError(instance_type, region, "spot",
                                   f"EC2 has no Spot price of that type in {az} (it has one in "
                                   f"{', '.join(sorted(prices))})")
            return prices[az]
        return min(prices.values(), key=lambda p: (p.usd, p.az))

    def ebs_gp3_usd_per_gb_month(self, region: str) -> Price:
        """The EBS gp3 storage price in ``region`` (IOPS and throughput above the baseline
        aside: annex volumes use the baseline).

        Returns:
            USD per GB-month (unit ``"GB-month"``).

        Raises:
            NoPriceError: neither the Price List nor the snapshot knows the region
                (``instance_type`` in the error is ``"gp3"``).
        """
        cached = self._cached(region, "ebs_gp3", "")
        if cached is not None:
            return Price(**{**cached, "cached": True})
        try:
            prices = self._get_products(region, [
                ("productFamily", "Storage"), ("volumeApiName", "gp3"), ("regionCode", region)])
        except ProviderError as exc:
            prices, why = [], str(exc)
        else:
            why = "the AWS Price List has no gp3 storage product there"
        monthly = [usd for usd, unit in prices if unit.lower().startswith("gb")]
        if monthly:
            price = Price(max(monthly), "GB-month", SOURCE_PRICE_LIST, self._day())
            self._store(region, "ebs_gp3", "", price)
            return price
        snap = self.snapshot()
        usd = snap.get("regions", {}).get(region, {}).get("ebs_gp3_usd_per_gb_month")
        if usd is None:
            raise NoPriceError("", region, "EBS gp3", why)
        return Price(float(usd), "GB-month", SOURCE_SNAPSHOT, snap["as_of"])

    def public_ipv4_usd_per_hour(self, region: str) -> Price:
        """The price of one in-use public IPv4 address (the snapshot's: the same in every
        commercial region; see the module docstring).

        Returns:
            USD per hour.
        """
        snap = self.snapshot()
        return Price(float(snap["public_ipv4_usd_per_hour"]), "hour", SOURCE_SNAPSHOT,
                     snap["as_of"])

    def snapshot(self) -> dict[str, Any]:
        """The shipped snapshot: ``{"as_of": "YYYY-MM-DD", "public_ipv4_usd_per_hour": float,
        "regions": {region: {"ebs_gp3_usd_per_gb_month": float, "on_demand_usd_per_hour":
        {instance type: float}}}}``."""
        if self._snapshot is None:
            text = resources.files("condor_annex.providers.aws").joinpath(
                "data", SNAPSHOT_FILE).read_text(encoding="utf-8")
            self._snapshot = json.loads(text)
        return self._snapshot

    def cache_path(self, region: str) -> Path:
        """The day's cache file of ``region``: ``prices-<region>-<YYYY-MM-DD>.json``."""
        return self.cache_dir / f"prices-{region}-{self._day()}.json"

    # --- the APIs ---------------------------------------------------------------------------

    def _get_products(self, region: str, attributes: list[tuple[str, str]]
                      ) -> list[tuple[float, str]]:
        """GetProducts of ServiceCode AmazonEC2 matching every ``(attribute, value)``, all
        pages; the On-Demand prices found (:func:`parse_on_demand`)."""
        endpoint = dataclasses.replace(self.settings, region=price_list_region(region))
        pricing = make_client(endpoint, "pricing", fast_fail=True)
        filters = [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in attributes]
        entries: list[str] = []
        token = None
        with aws_errors("pricing.GetProducts"):
            while True:
                kw: dict[str, Any] = {"ServiceCode": "AmazonEC2", "Filters": filters,
                                      "FormatVersion": "aws_v1", "MaxResults": 100}
                if token:
                    kw["NextToken"] = token
                page = pricing.get_products(**kw)
                entries += page.get("PriceList") or []
                token = page.get("NextToken")
                if not token:
                    break
        try:
            return parse_on_demand(entries)
        except (ValueError, AttributeError, TypeError) as exc:
            raise ProviderError(f"pricing.GetProducts: an answer that does not parse: {exc}",
                                code="MalformedPriceList") from exc

    def _spot_history(self, region: str, instance_type: str) -> dict[str, float]:
        """The effective Spot price now per AZ (see the module docstring), USD per hour."""
        ec2 = make_client(dataclasses.replace(self.settings, region=region), "ec2",
                          fast_fail=True)
        now = datetime.now(timezone.utc)
        newest: dict[str, tuple[datetime, float]] = {}
        with aws_errors("ec2.DescribeSpotPriceHistory"):
            pages = ec2.get_paginator("describe_spot_price_history").paginate(
                InstanceTypes=[instance_type], ProductDescriptions=[SPOT_PRODUCT],
                StartTime=now)
            for page in pages:
                for item in page.get("SpotPriceHistory", []):
                    az, when = item.get("AvailabilityZone", ""), item.get("Timestamp")
                    if item.get("InstanceType") != instance_type or not az or when is None:
                        continue
                    try:
                        usd = float(item.get("SpotPrice", "?"))
                    except ValueError:
                        usd = math.nan
                    if not math.isfinite(usd) or usd < 0:
                        raise ProviderError(f"ec2.DescribeSpotPriceHistory: price "
                                            f"{item.get('SpotPrice')!r} of {az}",
                                            code="MalformedSpotPrice")
                    if az not in newest or when > newest[az][0]:
                        newest[az] = (when, usd)
        return {az: usd for az, (_, usd) in newest.items()}

    # --- the snapshot and the cache ---------------------------------------------------------

    def _snapshot_on_demand(self, region: str, instance_type: str,
                            exc: ProviderError) -> Price:
        snap = self.snapshot()
        usd = snap.get("regions", {}).get(region, {}).get("on_demand_usd_per_hour", {}).get(
            instance_type)
        if usd is None:
            raise NoPriceError(instance_type, region, "on-demand",
                               f"the AWS Price List could not be asked ({exc}) and the price "
                               f"snapshot of {snap['as_of']} does not have it")
        log.info("On-Demand price of %s from the snapshot of %s (%s)", instance_type,
                 snap["as_of"], exc)
        return Price(float(usd), "hour", SOURCE_SNAPSHOT, snap["as_of"])

    def _day(self) -> str:
        return self.today().isoformat()

    def _read(self, region: str) -> dict[str, Any]:
        try:
            doc = json.loads(self.cache_path(region).read_text(encoding="utf-8"))
        except (OSError, ValueError):   # none yet, or torn by a crash: ask again
            return {}
        return doc if isinstance(doc, dict) else {}

    def _cached(self, region: str, kind: str, key: str) -> Any:
        """The day's record of one answer (a Price's fields, or AZ -> those), or None when
        there is none or it does not read as one (a file of another version: ask again)."""
        with self._lock:
            found = self._read(region).get(kind, {}).get(key or "-")
        if not isinstance(found, dict) or not found:
            return None
        try:
            for record in (found.values() if kind == "spot" else [found]):
                Price(**record)
        except TypeError:
            return None
        return found

    def _store(self, region: str, kind: str, key: str, value: Price | dict[str, Price]) -> None:
        """Add an answer to the day's file (read, merge, write a temporary file, rename: a
        reader never sees half a file).  A cache that cannot be written is only a cost."""
        record = value.to_json() if isinstance(value, Price) else \
            {az: p.to_json() for az, p in value.items()}
        with self._lock:
            doc = self._read(region)
            doc.setdefault(kind, {})[key or "-"] = record
            path = self.cache_path(region)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump(doc, out, indent=1, sort_keys=True)
                os.replace(tmp, path)
                for old in path.parent.glob(f"prices-{region}-*.json"):
                    if old != path:   # an earlier day's: never read again
                        old.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("price cache %s not written: %s", path, exc)
