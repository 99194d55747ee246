"""Prices in the local cloud: the AWS Price List Query API and EC2's Spot price history (a
gateway strict rule).

API (for the local cloud and tests)::

    from condor_annex.providers.local.strict_pricing import Prices
    prices = gateway.rule(Prices)                  # None when the gateway is not strict
    prices.set_on_demand("m4.large", 0.25)         # USD per hour, every region
    prices.set_spot("us-east-1", "m4.large", {"us-east-1a": 0.07, "us-east-1b": 0.05})
    prices.set_gp3(0.09)                           # USD per GB-month

moto has no Price List API at all, and answers DescribeSpotPriceHistory with one constant
price (0.00001) per AZ dated 2006.  This rule answers both in moto's place, in AWS's shapes, so
that the product's own lookups (:mod:`condor_annex.providers.aws.pricing`) are what tests run:

* ``pricing.GetProducts`` (``AWSPriceListService.GetProducts``, JSON 1.1;
  docs.aws.amazon.com/aws-cost-management/latest/APIReference/API_pricing_GetProducts.html):
  ``PriceList`` is a list of JSON *strings*, each one product (``product.attributes`` as in
  the EC2 offer file) with its ``terms.OnDemand.<offer>.priceDimensions.<rate>.pricePerUnit.
  USD``; ``Filters`` are ``TERM_MATCH`` on an attribute (or ``ServiceCode``), all of which a
  product must match; ``MaxResults`` (at most 100) and ``NextToken`` page.  The table holds,
  beside each instance type's Linux/Shared/Used product, the products a careless filter would
  also match (RHEL, Windows, SQL Server pre-installed, Dedicated tenancy, capacity-reservation
  rows), each dearer, and gp3's IOPS and throughput products beside its storage: a lookup
  that leaves a filter out gets a wrong price, as on AWS.  The endpoint exists only in
  us-east-1, ap-south-1 and eu-central-1 ("Finding services and products using AWS Price List
  Query API", docs.aws.amazon.com/awsaccountbilling/latest/aboutv2/using-price-list-query-api.html):
  a request signed for another region is refused (on AWS its host name does not resolve).
  ``pricing.DescribeServices`` lists AmazonEC2 with its attribute names.
* ``ec2.DescribeSpotPriceHistory``
  (docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeSpotPriceHistory.html): the
  history of each (region, type, AZ), filtered by ``InstanceType.N``, ``ProductDescription.N``,
  ``AvailabilityZone`` and the ``availability-zone`` / ``instance-type`` /
  ``product-description`` filters; with ``StartTime``, the entries from then to ``EndTime`` (or
  now) plus "the last price change before the start time, which is the effective price as of
  the start time".  By default each known type has, in AZs a, b and c of any region, a price
  two days old and a newer one a day old (different per AZ, about a third of On-Demand), so
  that a reader must take the newest per AZ.  A type the table does not know has no history
  (an empty answer, as AWS gives for a type not offered).
"""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import datetime, timezone
from typing import Any
from xml.sax.saxutils import escape

from condor_annex.providers.local.gateway_call import Call
from condor_annex.providers.local.gateway_replies import Reply, error_reply
from condor_annex.providers.local.gateway_strict import StrictRule

__all__ = ["DEFAULT_GP3", "DEFAULT_ON_DEMAND", "Prices"]

#: The local account's On-Demand Linux prices, USD per hour (AWS's us-east-1 list prices);
#: the same in every region.
DEFAULT_ON_DEMAND: dict[str, float] = {
    "m4.large": 0.10, "m4.xlarge": 0.20, "m5.large": 0.096, "m5.xlarge": 0.192,
    "m6i.large": 0.096, "c5.large": 0.085, "c5.xlarge": 0.17, "c6i.large": 0.085,
    "r5.large": 0.126, "t2.micro": 0.0116, "t2.medium": 0.0464, "t3.micro": 0.0104,
    "t3.small": 0.0208, "t3.medium": 0.0416, "t3.large": 0.0832,
}
#: gp3 storage, USD per GB-month.
DEFAULT_GP3 = 0.08
#: Spot price per AZ letter, as a fraction of On-Demand (the newer entry; the older is 10 %
#: dearer).
SPOT_FRACTIONS = {"a": 0.31, "b": 0.34, "c": 0.29}
PRICE_LIST_REGIONS = ("us-east-1", "ap-south-1", "eu-central-1")
SPOT_DESCRIPTION = "Linux/UNIX"
_JSON = [("Content-Type", "application/x-amz-json-1.1")]
_EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"
_DAY = 86400.0

#: (attribute overrides, price factor) of the products a lookup must not take for Linux.
_DECOYS: list[tuple[dict[str, str], float]] = [
    ({"operatingSystem": "RHEL", "operation": "RunInstances:0010",
      "licenseModel": "No License required"}, 1.6),
    ({"operatingSystem": "Windows", "operation": "RunInstances:0002",
      "licenseModel": "No License required"}, 1.9),
    ({"preInstalledSw": "SQL Std", "operation": "RunInstances:0004"}, 4.0),
    ({"tenancy": "Dedicated"}, 1.1),
    ({"capacitystatus": "UnusedCapacityReservation"}, 1.05),
    ({"capacitystatus": "AllocatedCapacityReservation"}, 1.02),
]


def _sku(*parts: str) -> str:
    return hashlib.sha1("/".join(parts).encode()).hexdigest()[:16].upper()


def _product(attributes: dict[str, str], family: str, usd: float, unit: str,
             description: str) -> str:
    """One PriceList entry as AWS writes it (a JSON string)."""
    sku = _sku(*sorted(f"{k}={v}" for k, v in attributes.items()), family)
    offer, rate = "JRTCKXETXF", "6YS6EN2CT7"
    return json.dumps({
        "product": {"productFamily": family, "attributes": attributes, "sku": sku},
        "serviceCode": "AmazonEC2",
        "terms": {"OnDemand": {f"{sku}.{offer}": {
            "priceDimensions": {f"{sku}.{offer}.{rate}": {
                "unit": unit, "endRange": "Inf", "description": description,
                "appliesTo": [], "rateCode": f"{sku}.{offer}.{rate}", "beginRange": "0",
                "pricePerUnit": {"USD": f"{usd:.10f}"}}},
            "sku": sku, "effectiveDate": "2026-11-01T00:00:00Z", "offerTermCode": offer,
            "termAttributes": {}}}},
        "version": "20261101000000", "publicationDate": "2026-11-01T00:00:00Z"})


class Prices(StrictRule):
    """The rule of the module docstring.  Thread-safe; :meth:`forget` (moto reset) restores
    the defaults."""

    def __init__(self, gateway) -> None:
        super().__init__(gateway)
        self._lock = threading.Lock()
        self.forget()

    # --- the table --------------------------------------------------------------------------

    def forget(self) -> None:
        with self._lock:
            self._on_demand = dict(DEFAULT_ON_DEMAND)
            self._gp3 = DEFAULT_GP3
            #: (region, type, az) -> [(epoch seconds, USD)], set explicitly.
            self._spot: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
            self._spot_set: set[tuple[str, str]] = set()

    def set_on_demand(self, instance_type: str, usd: float | None) -> None:
        """Set an instance type's On-Demand Linux price (USD per hour, every region); None
        removes the type (the Price List no longer knows it)."""
        with self._lock:
            if usd is None:
                self._on_demand.pop(instance_type, None)
            else:
                self._on_demand[instance_type] = float(usd)

    def set_gp3(self, usd: float) -> None:
        """Set gp3 storage's price, USD per GB-month."""
        with self._lock:
            self._gp3 = float(usd)

    def set_spot(self, region: str, instance_type: str, prices: dict[str, float]) -> None:
        """A Spot price change now: ``prices`` is AZ -> USD per hour.  The type's history in
        the region is then only what was set (the default history is dropped); AZs not named
        keep theirs."""
        now = self.gateway.wall()
        with self._lock:
            self._spot_set.add((region, instance_type))
            for az, usd in prices.items():
                self._spot.setdefault((region, instance_type, az), []).append((now, float(usd)))

    # --- answers ----------------------------------------------------------------------------

    def answer(self, call: Call, body: bytes) -> Reply | None:
        if call.service == "pricing" and call.operation in ("GetProducts", "DescribeServices"):
            return self._pricing(call, body)
        if call.service == "ec2" and call.operation == "DescribeSpotPriceHistory":
            return self._spot_history(call)
        return None

    def _pricing(self, call: Call, body: bytes) -> Reply:
        if call.region and call.region not in PRICE_LIST_REGIONS:
            return error_reply(call, "UnknownEndpoint",
                               f"api.pricing.{call.region}.amazonaws.com: no Price List Query "
                               f"API endpoint in {call.region} (only "
                               f"{', '.join(PRICE_LIST_REGIONS)})", 404)
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            return error_reply(call, "SerializationException", "body is not JSON", 400)
        if call.operation == "DescribeServices":
            names = sorted({k for p in self._products() for k in
                            json.loads(p)["product"]["attributes"]})
            services = [{"ServiceCode": "AmazonEC2", "AttributeNames": names}]
            if req.get("ServiceCode") not in (None, "AmazonEC2"):
                services = []
            return 200, list(_JSON), json.dumps({"Services": services,
                                                 "FormatVersion": "aws_v1"}).encode()
        if not req.get("ServiceCode"):
            return error_reply(call, "InvalidParameterException",
                               "ServiceCode is required", 400)
        size = int(req.get("MaxResults") or 100)
        if not 1 <= size <= 100:
            return error_reply(call, "InvalidParameterException",
                               "MaxResults must be from 1 to 100", 400)
        wanted = []
        for f in req.get("Filters") or []:
            if f.get("Type") != "TERM_MATCH":
                return error_reply(call, "InvalidParameterException",
                                   f"unsupported filter type {f.get('Type')!r}", 400)
            wanted.append((f.get("Field", ""), f.get("Value", "")))
        found = []
        for entry in self._products() if req["ServiceCode"] == "AmazonEC2" else []:
            product = json.loads(entry)["product"]
            attrs = {**product["attributes"], "productFamily": product["productFamily"]}
            if all(value == ("AmazonEC2" if field == "ServiceCode" else attrs.get(field))
                   for field, value in wanted):
                found.append(entry)
        start = int(req.get("NextToken") or 0)
        page = found[start:start + size]
        reply: dict[str, Any] = {"FormatVersion": "aws_v1", "PriceList": page}
        if start + size < len(found):
            reply["NextToken"] = str(start + size)
        return 200, list(_JSON), json.dumps(reply).encode()

    def _products(self) -> list[str]:
        """Every product of the table, in every region a request may name (the region is an
        attribute, so products are made for the region filtered on: see :meth:`_pricing`)."""
        with self._lock:
            on_demand, gp3 = dict(self._on_demand), self._gp3
        out = []
        for region in _REGIONS:
            for itype, usd in sorted(on_demand.items()):
                base = {"servicecode": "AmazonEC2", "instanceType": itype, "regionCode": region,
                        "location": region, "operatingSystem": "Linux", "tenancy": "Shared",
                        "preInstalledSw": "NA", "capacitystatus": "Used",
                        "operation": "RunInstances", "licenseModel": "No License required",
                        "usagetype": f"BoxUsage:{itype}", "marketoption": "OnDemand"}
                out.append(_product(base, "Compute Instance", usd, "Hrs",
                                    f"${usd} per On Demand Linux {itype} Instance Hour"))
                for changes, factor in _DECOYS:
                    out.append(_product({**base, **changes}, "Compute Instance",
                                        round(usd * factor, 6), "Hrs", "another product"))
            vol = {"servicecode": "AmazonEC2", "regionCode": region, "location": region,
                   "volumeApiName": "gp3", "usagetype": "EBS:VolumeUsage.gp3"}
            out.append(_product({**vol, "volumeType": "General Purpose"}, "Storage", gp3,
                                "GB-Mo", f"${gp3} per GB-month of General Purpose (gp3)"))
            out.append(_product({**vol, "usagetype": "EBS:VolumeP-IOPS.gp3"},
                                "System Operation", 0.005, "IOPS-Mo", "gp3 IOPS"))
            out.append(_product({**vol, "usagetype": "EBS:VolumeP-Throughput.gp3"},
                                "Provisioned Throughput", 0.04, "GiBps-mo", "gp3 throughput"))
            out.append(_product({**vol, "volumeApiName": "gp2",
                                 "usagetype": "EBS:VolumeUsage.gp2"}, "Storage", 0.10,
                                "GB-Mo", "gp2"))
        return out

    def _history(self, region: str, itype: str, now: float) -> dict[str, list[tuple[float, float]]]:
        """AZ -> [(epoch seconds, USD)] oldest first, for one type in one region."""
        with self._lock:
            if (region, itype) in self._spot_set:
                return {az: list(h) for (r, t, az), h in self._spot.items()
                        if r == region and t == itype}
            od = self._on_demand.get(itype)
        if od is None:
            return {}
        return {f"{region}{letter}": [(now - 2 * _DAY, round(od * f * 1.1, 6)),
                                      (now - _DAY, round(od * f, 6))]
                for letter, f in SPOT_FRACTIONS.items()}

    def _spot_history(self, call: Call) -> Reply:
        params = dict(call.params)
        multi: dict[str, list[str]] = {}
        filters: dict[str, list[str]] = {}
        for k, v in call.params:
            if k.startswith("InstanceType."):
                multi.setdefault("types", []).append(v)
            elif k.startswith("ProductDescription."):
                multi.setdefault("products", []).append(v)
        for k, v in call.params:   # Filter.N.Name / Filter.N.Value.M
            parts = k.split(".")
            if len(parts) == 3 and parts[0] == "Filter" and parts[2] == "Name":
                filters[v] = [fv for fk, fv in call.params
                              if fk.startswith(f"Filter.{parts[1]}.Value.")]
        region = call.region or "us-east-1"
        now = self.gateway.wall()
        start = _epoch(params.get("StartTime"))
        end = _epoch(params.get("EndTime")) or now
        types = multi.get("types") or filters.get("instance-type") or list(self._known_types())
        products = multi.get("products") or filters.get("product-description")
        azs = [params["AvailabilityZone"]] if params.get("AvailabilityZone") else \
            filters.get("availability-zone")
        items = []
        if products is None or SPOT_DESCRIPTION in products:
            for itype in types:
                for az, history in sorted(self._history(region, itype, now).items()):
                    if azs is not None and az not in azs:
                        continue
                    for ts, usd in _window(history, start, end):
                        items.append(
                            f"<item><instanceType>{escape(itype)}</instanceType>"
                            f"<productDescription>{SPOT_DESCRIPTION}</productDescription>"
                            f"<spotPrice>{usd:.6f}</spotPrice><timestamp>{_iso(ts)}"
                            f"</timestamp><availabilityZone>{escape(az)}</availabilityZone>"
                            "</item>")
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<DescribeSpotPriceHistoryResponse '
                f'xmlns="{_EC2_NS}"><requestId>{_sku(str(now), region)}</requestId>'
                f"<spotPriceHistorySet>{''.join(items)}</spotPriceHistorySet><nextToken/>"
                "</DescribeSpotPriceHistoryResponse>").encode()
        return 200, [("Content-Type", "text/xml;charset=UTF-8")], body

    def _known_types(self) -> set[str]:
        with self._lock:
            return set(self._on_demand) | {t for _, t in self._spot_set}


#: Regions the Price List table has products for.
_REGIONS = ("us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-central-1",
            "ap-south-1", "ap-northeast-1")


def _window(history: list[tuple[float, float]], start: float | None,
            end: float) -> list[tuple[float, float]]:
    """The entries of ``history`` (oldest first) from ``start`` to ``end``, plus the last one
    before ``start`` (the price in effect at ``start``); all up to ``end`` without a start."""
    if start is None:
        return [h for h in history if h[0] <= end]
    before = [h for h in history if h[0] < start]
    inside = [h for h in history if start <= h[0] <= end]
    return before[-1:] + inside


def _epoch(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
