"""``extend`` and the budget (issue 12 item 5) on the moto server, by the command line:
``extend NAME --budget USD`` changes the budget in the store and on the instances' tag, a budget
below the spend plus a minute is refused, and an extend the budget cannot pay for is refused
unless ``--budget`` raises it in the same command; the classic ``-duration`` too."""

from __future__ import annotations

import json

import pytest

from condor_annex.model import TAG_BUDGET, utcnow
from condor_annex.providers.local.strict_pricing import Prices
from condor_annex.reconciler.budget_actions import DRAIN_KEY
from condor_annex.state.store import Store, default_path
from tests.aws.test_create_safety import cloud, run  # noqa: F401 - the fixture

__all__ = ["cloud"]

#: One cent a minute.
PRICE = 0.60


def _budgeted(cloud, capsys, name, budget, count=2, duration="50m"):
    cloud.gateway.rule(Prices).set_on_demand("m4.large", PRICE)
    code, _out, err = run(["create", name, "--count", str(count), "--budget", str(budget),
                           "--duration", duration], capsys)
    assert code == 0, err


def _spec(name):
    with Store(default_path({})) as store:
        return store.annex(name).spec


def _budget_tags(cloud, name):
    return {t[TAG_BUDGET].split()[0] for t in cloud.instances(name).values()}


def test_extend_budget_alone_changes_the_store_and_the_tags_not_the_lease(cloud, capsys):
    _budgeted(cloud, capsys, "raise", 1)
    lease = cloud.leases()["raise"]
    code, out, err = run(["extend", "raise", "--budget", "2.5", "--json"], capsys)
    assert code == 0, err
    answer = json.loads(out)
    assert answer["budget_usd"] == 2.5 and answer["usd_spent"] > 0
    assert answer["usd_per_hour"] == pytest.approx(2 * PRICE)
    assert _spec("raise")["budget_usd"] == 2.5 and _budget_tags(cloud, "raise") == {"2.5"}
    assert cloud.leases()["raise"] == lease


def test_a_budget_below_the_spend_plus_a_minute_is_refused_and_nothing_changes(cloud, capsys):
    # Two instances just launched: 2 cents billed (a minute each) + 2 cents for the next minute.
    _budgeted(cloud, capsys, "low", 1)
    code, out, err = run(["extend", "low", "--budget", "0.03"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("condor_annex: --budget: $0.03 is less than the $0.02") or \
        "--budget: $0.03 is less than the $0.02" in err
    assert "give at least $0.04" in err
    assert _spec("low")["budget_usd"] == 1.0 and _budget_tags(cloud, "low") == {"1"}


def test_an_extend_the_budget_cannot_pay_for_is_refused_in_one_line(cloud, capsys):
    # $0.50 pays 25 minutes of two instances: a 3-hour lease would cost about $3.60.
    _budgeted(cloud, capsys, "poor", 0.5)
    lease = cloud.leases()["poor"]
    code, out, err = run(["extend", "poor", "3h"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "DURATION: annex 'poor' would cost $3.6" in err and "add --budget 3.6" in err
    assert cloud.leases()["poor"] == lease and _spec("poor")["budget_usd"] == 0.5


def test_the_same_extend_with_a_budget_raised_enough_moves_the_lease(cloud, capsys):
    _budgeted(cloud, capsys, "rich", 0.5)
    lease = cloud.leases()["rich"]
    code, out, err = run(["extend", "rich", "3h", "--budget", "5"], capsys)
    assert code == 0, err
    assert "Its budget is now $5.00" in " ".join(out.split())
    assert cloud.leases()["rich"] > lease
    assert _spec("rich")["budget_usd"] == 5.0 and _budget_tags(cloud, "rich") == {"5"}


def test_a_raise_too_small_for_the_new_lease_is_refused(cloud, capsys):
    _budgeted(cloud, capsys, "small", 0.5)
    code, _out, err = run(["extend", "small", "3h", "--budget", "1"], capsys)
    assert code == 2 and "would cost $3.6" in err and "more than its $1.00 budget" in err
    assert _spec("small")["budget_usd"] == 0.5


def test_the_classic_lease_update_is_refused_naming_duration(cloud, capsys):
    _budgeted(cloud, capsys, "old", 0.5)
    lease = cloud.leases()["old"]
    code, out, err = run(["-annex-name", "old", "-duration", "3"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "-duration: annex 'old' would cost" in err
    assert "condor_annex extend old --budget" in err
    assert cloud.leases()["old"] == lease


def test_an_annex_without_a_budget_extends_as_before_and_may_get_one(cloud, capsys):
    cloud.gateway.rule(Prices).set_on_demand("m4.large", PRICE)
    assert run(["create", "free", "--count", "1"], capsys)[0] == 0
    code, out, err = run(["extend", "free", "3h", "--json"], capsys)
    assert code == 0 and json.loads(out)["budget_usd"] is None, err
    code, _out, err = run(["extend", "free", "--budget", "4"], capsys)
    assert code == 0, err
    spec = _spec("free")
    assert spec["budget_usd"] == 4.0 and [tuple(p) for p in spec["budget_prices"]] == [
        ("m4.large", PRICE)]
    assert _budget_tags(cloud, "free") == {"4"}


def test_an_annex_its_budget_drains_refuses_a_new_budget(cloud, capsys):
    _budgeted(cloud, capsys, "ending", 1)
    with Store(default_path({})) as store:
        store.update_spec("ending", {DRAIN_KEY: {"at": utcnow().isoformat(),
                                                 "reason": "budget: spent"}})
    code, _out, err = run(["extend", "ending", "--budget", "9"], capsys)
    assert code == 2 and "already ending by its budget" in err


@pytest.mark.parametrize("value", ["-1", "0", "nan", "abc", "1e3", ""])
def test_a_bad_budget_is_one_line_naming_the_flag(cloud, capsys, value):
    _budgeted(cloud, capsys, "bad", 1)
    code, out, err = run(["extend", "bad", "--budget", value], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and "--budget" in err, err
    assert _spec("bad")["budget_usd"] == 1.0


def test_extend_without_duration_or_budget_is_one_line(cloud, capsys):
    code, out, err = run(["extend", "x"], capsys)
    assert code == 2 and err.count("\n") == 1 and "give a DURATION or --budget" in err
