"""Live cost (issue 12 item 4), the pure part (:mod:`condor_annex.reconciler.cost`): the rate
now and what was spent, from instances, prices and a fixed time; the total line and the
estimate as people see them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from condor_annex.cli.cost_text import cost_total_line, estimate_line, usd
from condor_annex.model import CloudInstance
from condor_annex.providers.aws.pricing import Price
from condor_annex.reconciler.annex_status import AnnexStatus, add_cost
from condor_annex.reconciler.cost import annex_cost, launch_prices, lease_estimate

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
PRICES = {("m5.large", "on-demand"): Price(0.096, "hour", "price-list", "2026-11-30"),
          ("m5.large", "spot"): Price(0.04, "hour", "spot-price-history", "2026-11-30"),
          ("c5.large", "on-demand"): Price(0.085, "hour", "snapshot", "2026-11-01")}


def lookup(itype, market, az=""):
    if (itype, market, az) == ("m5.large", "spot", "us-east-1b"):
        return Price(0.05, "hour", "spot-price-history", "2026-11-30", az=az)
    return PRICES.get((itype, market))


def inst(iid, itype="m5.large", state="running", launched=T0, lifecycle="on-demand", ip=""):
    return CloudInstance(iid, "a", state, itype, launched, lifecycle=lifecycle, public_ip=ip)


def test_rate_is_the_sum_of_running_instances_prices_by_their_market():
    cost = annex_cost({"i-1": inst("i-1"), "i-2": inst("i-2", lifecycle="spot"),
                       "i-3": inst("i-3", state="terminated")}, lookup, T0 + timedelta(hours=1))
    assert cost.usd_per_hour == pytest.approx(0.096 + 0.04)
    assert [(c.instance_id, c.market, c.usd_per_hour) for c in cost.instances] == [
        ("i-1", "on-demand", 0.096), ("i-2", "spot", 0.04), ("i-3", "on-demand", 0.0)]
    assert cost.snapshot_date == ""


def test_a_spot_instance_is_priced_in_its_own_zone():
    cost = annex_cost({"i-1": CloudInstance("i-1", "a", "running", "m5.large", T0,
                                            lifecycle="spot", az="us-east-1b"),
                       "i-2": inst("i-2", lifecycle="spot")}, lookup, T0 + timedelta(hours=1))
    assert [c.usd_per_hour for c in cost.instances] == [0.05, 0.04]


def test_spent_grows_with_time_at_the_price_kept_at_launch():
    instances = {"i-1": inst("i-1"), "i-2": inst("i-2")}
    kept = {("m5.large", "on-demand"): 0.2}    # the price when the annex was created
    one = annex_cost(instances, lookup, T0 + timedelta(hours=1), at_launch=kept)
    three = annex_cost(instances, lookup, T0 + timedelta(hours=3), at_launch=kept)
    assert one.usd_spent == pytest.approx(0.4)
    assert three.usd_spent == pytest.approx(1.2)
    assert one.usd_per_hour == pytest.approx(2 * 0.096)    # the rate now is today's price


def test_without_a_kept_price_spent_uses_the_current_one_and_counts_at_least_a_minute():
    cost = annex_cost({"i-1": inst("i-1")}, lookup, T0 + timedelta(seconds=5))
    assert cost.usd_spent == pytest.approx(60 * 0.096 / 3600)


def test_an_ended_instance_counts_until_the_store_saw_it_end_and_unknown_ends_count_zero():
    instances = {"i-1": inst("i-1", state="terminated"), "i-2": inst("i-2", state="terminated")}
    cost = annex_cost(instances, lookup, T0 + timedelta(hours=5),
                      ended_at={"i-1": T0 + timedelta(hours=2)})
    assert cost.usd_spent == pytest.approx(2 * 0.096)
    assert cost.usd_per_hour == 0.0


def test_public_ipv4_addresses_are_charged_while_they_run():
    cost = annex_cost({"i-1": inst("i-1", ip="1.2.3.4")}, lookup, T0 + timedelta(hours=1),
                      ip_usd_per_hour=0.005)
    assert cost.usd_per_hour == pytest.approx(0.101)
    assert cost.usd_spent == pytest.approx(0.101)


def test_an_unknown_price_makes_rate_and_spent_unknown_never_zero():
    cost = annex_cost({"i-1": inst("i-1"), "i-2": inst("i-2", itype="x9.huge")}, lookup,
                      T0 + timedelta(hours=1))
    assert cost.usd_per_hour is None and cost.usd_spent is None
    assert cost.unknown_types == ("x9.huge",)
    st = AnnexStatus("a")
    add_cost(st, cost, {"i-1": "joined"})
    data = st.as_dict()
    assert data["usd_per_hour"] is None and data["price_unknown"] == ["x9.huge"]
    assert data["instances"][0] == {"instance_id": "i-1", "ec2_state": "running",
                                    "lifecycle": "joined", "market": "on-demand",
                                    "instance_type": "m5.large", "usd_per_hour": 0.096}
    assert data["instances"][1]["usd_per_hour"] is None
    line = cost_total_line([st])
    assert line.startswith("Total: ?/h now, ? spent") and "x9.huge" in line
    assert usd(None) == "?" and usd(0.0) == "$0.00"


def test_a_snapshot_price_names_its_date_once():
    cost = annex_cost({"i-1": inst("i-1", itype="c5.large")}, lookup, T0 + timedelta(hours=2))
    st, other = AnnexStatus("a"), AnnexStatus("b")
    add_cost(st, cost)
    add_cost(other, cost)
    line = cost_total_line([st, other])
    assert line.count("snapshot of 2026-11-01") == 1
    assert "$0.17/h now, $0.34 spent" in line


def test_launch_prices_read_back_from_the_spec_and_skip_malformed_entries():
    spec = {"launch_prices": {"m5.large": {"market": "on-demand", "usd_per_hour": 0.1},
                              "bad": {"usd_per_hour": "x"}}}
    assert launch_prices(spec) == {("m5.large", "on-demand"): 0.1}
    assert launch_prices({}) == {} and launch_prices(None) == {}


def test_estimate_is_count_times_price_times_lease_hours():
    est = lease_estimate([("m5.large", 3)], "on-demand", lookup, 2 * 3600)
    assert est.usd == pytest.approx(3 * 0.096 * 2)
    assert estimate_line(est) == ("Estimated cost for the whole lease: 3 x m5.large at $0.10/h "
                                  "each (On-Demand) for 2.00 hours = $0.58.")
    unknown = lease_estimate([("x9.huge", 1)], "on-demand", lookup, 3600)
    assert unknown.usd is None
    assert estimate_line(unknown) == ("Estimated cost: unknown (no On-Demand price known for "
                                      "instance type x9.huge).")
