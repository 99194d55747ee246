"""The budget's cloud-side backstop (issue 12 item 5): the lease sweep (lease/handler.py) ends a
budgeted annex from its instances' ``htcondor:Budget`` tag, launch times and types alone, once
spend + (the sweep's period + 1 min) of its rate reaches the budget; and ``create --budget``
puts that tag on the instances.  Against the moto server (the gateway for the create)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import condor_annex.lease.handler as lease_handler
from condor_annex.model import AnnexSpec
from condor_annex.providers.aws.session import make_client
from condor_annex.service.budget_check import BUDGET_TAG, budget_tag
from condor_annex.state.store import Store, default_path
from tests.aws.test_create_safety import cloud, run  # noqa: F401 - the fixture
from tests.aws.test_lease_handler import clients  # noqa: F401 - the fixture

__all__ = ["cloud", "clients"]

#: $0.60 an hour: one cent a minute.
PRICE = 0.60
#: What the sweep adds to the spend: its period and one minute, in minutes.
AHEAD_MIN = (lease_handler.SWEEP_S + 60) / 60


def _annex(provider, launch_request, name, budget, *, count=2, prices=(("m4.large", PRICE),),
           itype="m4.large"):
    """A budgeted annex as create makes it: bundle, a 30-min lease, instances tagged with the
    lease end and ``htcondor:Budget``.  Returns (instance ids, their launch time, epoch s)."""
    end = datetime.now(timezone.utc) + timedelta(minutes=30)
    provider.put_bundle(name, b"bundle")
    provider.create_lease(name, end)
    spec = AnnexSpec(name=name, count=count, budget_usd=budget, budget_prices=prices)
    ids = provider.launch(launch_request(name, count=count, lease_end=end, instance_type=itype,
                                         budget=budget_tag(spec))).instance_ids
    ec2 = provider_ec2(provider)
    found = ec2.describe_instances(InstanceIds=list(ids))["Reservations"]
    launched = max(i["LaunchTime"].timestamp() for r in found for i in r["Instances"])
    return ids, launched


def provider_ec2(provider):
    return make_client(provider.settings, "ec2")


def _live(provider, name):
    return {i for i, inst in provider.query_instances(name).items() if inst.alive}


def _sweep(provider, clients, now):
    return lease_handler.sweep({"Sweep": True, "S3BucketName": provider.outputs.bucket},
                               clients, now=now)


def test_the_sweep_ends_an_annex_once_spend_plus_its_period_and_a_minute_reach_the_budget(
        provider, launch_request, clients):
    # Two instances at one cent a minute: $0.20 is reached 10 minutes of both after launch,
    # so the sweep ends it from 10 - AHEAD_MIN (4) minutes on, long before its 30-min lease.
    ids, launched = _annex(provider, launch_request, "bud", 0.20)
    cheap, _ = _annex(provider, launch_request, "roomy", 100.0)
    plain = provider.launch(launch_request("plain", count=1)).instance_ids

    early = _sweep(provider, clients, launched + (10 - AHEAD_MIN - 0.5) * 60)
    assert early["Ended"] == [] and _live(provider, "bud") == set(ids)

    due = _sweep(provider, clients, launched + (10 - AHEAD_MIN + 0.5) * 60)

    assert due["Ended"] == ["bud"]
    assert _live(provider, "bud") == set() and not provider.bundle_exists("bud")
    assert provider.get_lease("bud") is None
    assert _live(provider, "roomy") == set(cheap)
    assert _live(provider, "plain") == set(plain)


def test_a_type_the_create_did_not_price_counts_at_the_dearest_price_kept(
        provider, launch_request, clients):
    # One m5.large (not in the tag) counted at the dearest kept, $1.20/h = 2 cents a minute:
    # $0.20 is reached after 10 minutes of it (5 minutes at the cheaper price would be wrong).
    prices = (("c5.large", PRICE / 2), ("m4.large", 2 * PRICE))
    _ids, launched = _annex(provider, launch_request, "mixed", 0.20, count=1, prices=prices,
                            itype="m5.large")
    assert _sweep(provider, clients, launched + (10 - AHEAD_MIN - 0.5) * 60)["Ended"] == []
    assert _sweep(provider, clients, launched + (10 - AHEAD_MIN + 0.5) * 60)["Ended"] == \
        ["mixed"]


def test_an_extended_schedule_does_not_save_an_annex_over_budget(provider, launch_request,
                                                                 clients):
    # The lease-end rule keeps an annex whose schedule moved later; a budget is not a lease.
    _ids, launched = _annex(provider, launch_request, "spent", 0.01, count=1)
    assert _sweep(provider, clients, launched)["Ended"] == ["spent"]


def test_a_malformed_budget_tag_is_skipped_not_fatal(provider, launch_request, clients):
    ids, launched = _annex(provider, launch_request, "odd", 0.01, count=1)
    provider_ec2(provider).create_tags(Resources=list(ids),
                                       Tags=[{"Key": BUDGET_TAG, "Value": "lots"}])
    assert _sweep(provider, clients, launched + 600)["Ended"] == []   # lease: 30 min
    assert _live(provider, "odd") == set(ids)


def test_create_with_a_budget_tags_its_instances_and_keeps_budget_and_prices(cloud, capsys):
    code, _out, err = run(["create", "bud", "--count", "2", "--instance-type", "m5.large",
                           "--budget", "2.5"], capsys)
    assert code == 0, err
    tags = {t[BUDGET_TAG] for t in cloud.instances("bud").values()}
    (value,) = tags
    budget, price = value.split()
    assert budget == "2.5" and price.startswith("m5.large=") and float(price[9:]) > 0
    with Store(default_path({})) as store:
        spec = store.annex("bud").spec
    assert spec["budget_usd"] == 2.5
    assert [tuple(p) for p in spec["budget_prices"]] == [("m5.large", float(price[9:]))]


def test_adding_to_a_budgeted_annex_without_budget_keeps_its_budget(cloud, capsys):
    assert run(["create", "keep", "--count", "1", "--budget", "2.5"], capsys)[0] == 0
    assert run(["create", "keep", "--count", "1"], capsys)[0] == 0
    values = [t.get(BUDGET_TAG, "") for t in cloud.instances("keep").values()]
    assert len(values) == 2 and {v.split()[0] for v in values} == {"2.5"}
    with Store(default_path({})) as store:
        assert store.annex("keep").spec["budget_usd"] == 2.5


def test_the_knob_gives_a_budget_and_without_either_there_is_none(cloud, capsys):
    from condor_annex import config
    assert run(["create", "free", "--count", "1"], capsys)[0] == 0
    assert all(BUDGET_TAG not in t for t in cloud.instances("free").values())
    config.write_block("budget", {"ANNEX_DEFAULT_BUDGET": "7"})
    assert run(["create", "knob", "--count", "1"], capsys)[0] == 0
    assert {t[BUDGET_TAG].split()[0] for t in cloud.instances("knob").values()} == {"7"}


def test_the_sweep_ends_what_create_budgeted(cloud, capsys):
    assert run(["create", "tiny", "--count", "1", "--budget", "0.01"], capsys)[0] == 0
    clients_ = {k: make_client(cloud.aws, k) for k in ("ec2", "s3", "scheduler", "iam")}
    result = lease_handler.sweep({"Sweep": True, "S3BucketName": cloud.outputs.bucket},
                                 clients_, now=time.time())
    assert result["Ended"] == ["tiny"] and cloud.instances("tiny") == {}


def test_a_budgeted_spot_annex_keeps_spot_prices_of_each_type_on_its_instances(cloud, capsys):
    code, _out, err = run(["create", "sp", "--spot", "--capacity", "2", "--instance-types",
                           "m5.large,m5.xlarge:2", "--budget", "3"], capsys)
    assert code == 0, err
    values = {t[BUDGET_TAG] for t in cloud.instances("sp").values()}
    assert len(values) == 1
    budget, *prices = values.pop().split()
    assert budget == "3" and [p.split("=")[0] for p in prices] == ["m5.large", "m5.xlarge"]
    with Store(default_path({})) as store:
        kept = dict((t, usd) for t, usd in store.annex("sp").spec["budget_prices"])
    assert kept == {p.split("=")[0]: float(p.split("=")[1]) for p in prices}
    assert all(usd > 0 for usd in kept.values())


def test_the_per_day_knob_is_kept_with_prices_but_puts_no_budget_tag(cloud, capsys):
    from condor_annex import config
    config.write_block("budget", {"ANNEX_BUDGET_PER_DAY": "20"})
    assert run(["create", "daily", "--count", "1", "--instance-type", "m5.large"], capsys)[0] == 0
    assert all(BUDGET_TAG not in t for t in cloud.instances("daily").values())
    with Store(default_path({})) as store:
        spec = store.annex("daily").spec
    assert spec["budget_per_day_usd"] == 20.0 and spec["budget_usd"] == 0.0
    assert [p[0] for p in spec["budget_prices"]] == ["m5.large"]
