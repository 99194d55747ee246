"""Live cost (issue 12 item 4) on the moto server behind the gateway, whose strict pricing
layer answers the Price List Query API and DescribeSpotPriceHistory: ``status --json``'s
``usd_per_hour``, ``usd_spent`` and ``instances``, the price kept at create, "?" for a type no
source knows, the same fields from a reconciler pass, and the classic prompt's estimate."""

from __future__ import annotations

import io
import json
import re
from datetime import timedelta

import pytest

from condor_annex.cli import render
from condor_annex.daemon.main import Daemon
from condor_annex.providers.local.strict_pricing import Prices
from condor_annex.service import status_cost
from condor_annex.service.context import Context
from condor_annex.state.store import Store, default_path
from tests.aws.test_create_safety import cloud, run  # noqa: F401 - the fixture

__all__ = ["cloud"]

IP_USD = 0.005   # the snapshot's public IPv4 price


def _status(capsys, *argv):
    code, out, err = run(["status", "--json", *argv], capsys)
    assert code == 0, err
    return {row["name"]: row for row in json.loads(out)}


def test_status_json_gives_rate_spent_and_priced_instances_of_an_on_demand_annex(
        cloud, capsys):
    cloud.gateway.rule(Prices).set_on_demand("m4.large", 0.25)
    assert run(["create", "priced", "--count", "2"], capsys)[0] == 0
    row = _status(capsys)["priced"]
    assert len(row["instances"]) == 2
    for i in row["instances"]:
        assert i["instance_type"] == "m4.large" and i["market"] == "on-demand"
        assert i["ec2_state"] in ("pending", "running") and i["instance_id"].startswith("i-")
        assert i["lifecycle"]   # the store's state (requested/allocated)
        # the instance's price, plus its public IPv4 address if it has one
        assert i["usd_per_hour"] in (0.25, 0.25 + IP_USD)
    assert row["usd_per_hour"] == pytest.approx(sum(i["usd_per_hour"] for i in row["instances"]))
    assert 0 < row["usd_spent"] < 0.02           # launched seconds ago: a minute at most
    assert row["price_unknown"] == [] and row["price_snapshot_date"] == ""
    for old in ("name", "requested", "running", "joined", "lease_expires_at", "states"):
        assert old in row                       # new fields beside the old ones
    # The price seen at create is kept with the annex.
    with Store(default_path({})) as store:
        kept = store.annex("priced").spec["launch_prices"]
    assert kept["m4.large"]["usd_per_hour"] == 0.25 and kept["m4.large"]["market"] == "on-demand"


def test_spent_grows_with_time_at_the_price_of_the_launch(cloud, capsys, monkeypatch):
    cloud.gateway.rule(Prices).set_on_demand("m4.large", 0.5)
    assert run(["create", "growing", "--count", "1"], capsys)[0] == 0
    row = _status(capsys)["growing"]
    rate = row["usd_per_hour"]
    now = status_cost.clock()
    monkeypatch.setattr(status_cost, "clock", lambda: now + timedelta(hours=1))
    one = _status(capsys)["growing"]["usd_spent"]
    monkeypatch.setattr(status_cost, "clock", lambda: now + timedelta(hours=3))
    three = _status(capsys)["growing"]["usd_spent"]
    assert three - one == pytest.approx(2 * rate, abs=1e-3)
    assert one == pytest.approx(rate, abs=0.01)
    # The table: the two columns and the total line.
    monkeypatch.setattr(render.console, "width", 200)
    code, out, _ = run(["status"], capsys)
    assert code == 0 and "$/h now" in out and "spent" in out
    total = re.search(r"Total: \$([0-9.]+)/h now, \$([0-9.]+) spent\.", out)
    assert total is not None, out
    assert float(total[1]) == pytest.approx(rate, abs=0.006)
    assert float(total[2]) == pytest.approx(three, abs=0.006)


def test_an_instance_type_with_no_price_shows_a_question_mark_never_zero(cloud, capsys):
    cloud.gateway.rule(Prices).set_on_demand("m4.large", None)
    assert run(["create", "mystery", "--count", "1"], capsys)[0] == 0
    row = _status(capsys)["mystery"]
    assert row["usd_per_hour"] is None and row["usd_spent"] is None
    assert row["price_unknown"] == ["m4.large"] and row["instances"][0]["usd_per_hour"] is None
    code, out, _ = run(["status"], capsys)
    assert "Total: ?/h now, ? spent (no price known for m4.large)." in out
    assert "$0.00" not in out


def test_a_pass_keeps_the_cost_fields_for_status_from_the_store(cloud, capsys):
    cloud.gateway.rule(Prices).set_on_demand("m4.large", 0.25)
    assert run(["create", "daemonic", "--count", "2"], capsys)[0] == 0
    ctx = Context.load()
    Daemon(ctx, default_path(ctx.knobs)).one_pass()
    with Store(default_path({})) as store:
        _at, seen = store.observations()
    row = seen["daemonic"]
    assert row["usd_per_hour"] >= 0.5 and row["usd_spent"] > 0
    assert {i["instance_type"] for i in row["instances"]} == {"m4.large"}
    assert all(i["usd_per_hour"] in (0.25, 0.25 + IP_USD) for i in row["instances"])
    from condor_annex.reconciler.annex_status import status_from_dict
    st = status_from_dict(row)
    assert st.usd_per_hour == row["usd_per_hour"] and len(st.as_dict()["instances"]) == 2
    assert set(st.as_dict()["instances"][0]) == {"instance_id", "ec2_state", "lifecycle",
                                                 "market", "instance_type", "usd_per_hour"}


def test_the_classic_prompt_keeps_its_sentence_and_adds_the_estimate(cloud, capsys,
                                                                      monkeypatch):
    cloud.gateway.rule(Prices).set_on_demand("m4.large", 0.1)
    monkeypatch.setattr("sys.stdin", io.StringIO("no\n"))
    code, out, err = run(["-annex-name", "asked", "-count", "3", "-duration", "2"], capsys)
    assert code == 1
    lines = (out + err).splitlines()
    first = lines.index("Will request 3 m4.large on-demand instances for 2.00 hours. Each "
                        "instance will terminate after being idle for 0.25 hours.")
    assert lines[first + 1] == ("Estimated cost for the whole lease: 3 x m4.large at $0.10/h "
                                "each (On-Demand) for 2.00 hours = $0.60.")
    assert lines[first + 2].startswith("Is that OK? (Type 'yes' or 'no'): ")
    assert cloud.instances("asked") == {}


def test_the_modern_create_asks_only_on_a_terminal(cloud, capsys, monkeypatch):
    cloud.gateway.rule(Prices).set_on_demand("m4.large", 0.1)
    tty = io.StringIO("n\n")
    tty.isatty = lambda: True    # type: ignore[method-assign]
    monkeypatch.setattr("sys.stdin", tty)
    code, out, _ = run(["create", "tty", "--count", "2", "--duration", "3h"], capsys)
    assert code == 1 and "Not starting annex tty." in out
    assert "m4.large" in out and "$0.60" in out and "Start annex tty? [y/N]" in out
    assert cloud.instances("tty") == {}
    monkeypatch.setattr("sys.stdin", tty)
    code, out, _ = run(["create", "tty", "--count", "2", "--duration", "3h", "--yes"], capsys)
    assert code == 0 and "Start annex" not in out and len(cloud.instances("tty")) == 2


def test_a_spot_annex_is_priced_at_the_spot_price(cloud, capsys):
    prices = cloud.gateway.rule(Prices)
    prices.set_spot("us-east-1", "m5.large", {az: 0.031 for az in
                                              ("us-east-1a", "us-east-1b", "us-east-1c",
                                               "us-east-1d", "us-east-1e", "us-east-1f")})
    prices.set_on_demand("m5.large", 0.096)
    code, _out, err = run(["create", "spotty", "--spot", "--capacity", "2", "--instance-types",
                           "m5.large"], capsys)
    assert code == 0, err
    row = _status(capsys)["spotty"]
    assert {i["market"] for i in row["instances"]} == {"spot"}
    assert all(i["usd_per_hour"] in (0.031, 0.031 + IP_USD) for i in row["instances"])
    with Store(default_path({})) as store:
        kept = store.annex("spotty").spec["launch_prices"]
    assert kept["m5.large"] == {"market": "spot", "usd_per_hour": 0.031,
                                "source": "spot-price-history", "as_of": kept["m5.large"]["as_of"]}


def test_the_classic_prompt_says_when_the_price_is_unknown(cloud, capsys, monkeypatch):
    cloud.gateway.rule(Prices).set_on_demand("m4.large", None)
    monkeypatch.setattr("sys.stdin", io.StringIO("no\n"))
    code, out, _err = run(["-annex-name", "unpriced", "-count", "1"], capsys)
    assert code == 1
    assert ("\nEstimated cost: unknown (no On-Demand price known for instance type m4.large)."
            "\nIs that OK?") in out
    assert "$0" not in out
