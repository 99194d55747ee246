"""condor_annexd's budget end on the moto server (issue 12 item 5): a budgeted annex is first
drained (its nodes asked to leave the pool, as ``off`` asks them), then ended once they left
or its drain window ran out; ``status`` says its budget ended it; the cost of ended instances
is kept and reaches the lease sweep's tag.  Passes run in-process with a clock moved ahead."""

from __future__ import annotations

import json
from datetime import timedelta

from condor_annex.model import TAG_ANNEX_OFF, TAG_BUDGET
from condor_annex.providers.local.strict_pricing import Prices
from condor_annex.reconciler.budget_actions import DRAIN_KEY, ENDED_KEY
from condor_annex.reconciler.reconcile import run_pass
from condor_annex.service.context import Context
from condor_annex.state.store import Store, default_path
from tests.aws.test_create_safety import cloud, run  # noqa: F401 - the fixture

__all__ = ["cloud"]

#: One cent a minute.
PRICE = 0.60


def _pass(minutes_after_launch: float, name: str):
    """One reconciler pass (no collector) at the annex's launch + ``minutes_after_launch``."""
    ctx = Context.load()
    outputs = ctx.setup_outputs()
    provider = ctx.provider(outputs)
    launched = max(i.launch_time for i in provider.query_instances(
        name, include_terminated=True).values())
    at = launched + timedelta(minutes=minutes_after_launch)
    with Store(default_path(ctx.knobs)) as store:
        return run_pass(provider, store, collector=None, bucket=outputs.bucket,
                        listing_lag_s=0, now=lambda: at)


def _annex(name):
    with Store(default_path({})) as store:
        return store.annex(name)


def _budgeted(cloud, capsys, name, budget, count=2):
    cloud.gateway.rule(Prices).set_on_demand("m4.large", PRICE)
    code, _out, err = run(["create", name, "--count", str(count), "--budget", str(budget)],
                          capsys)
    assert code == 0, err


def test_the_budget_drains_the_annex_then_ends_it_and_status_says_why(cloud, capsys):
    # Two instances at one cent a minute: $0.20 spent after 10 minutes.
    _budgeted(cloud, capsys, "bud", 0.21)
    _pass(5, "bud")                          # $0.10 + $0.02 < $0.21: nothing
    assert not any(TAG_ANNEX_OFF in t for t in cloud.instances("bud").values())

    _pass(9.6, "bud")                         # $0.192 + $0.02 >= $0.21: drain
    tags = cloud.instances("bud")
    assert len(tags) == 2 and all(TAG_ANNEX_OFF in t for t in tags.values())  # not ended yet
    record = _annex("bud")
    assert record.ended_at is None and record.spec[DRAIN_KEY]["reason"].startswith("budget")
    assert record.launch_stopped.startswith("budget")
    code, out, _ = run(["status", "bud", "--json"], capsys)
    (row,) = json.loads(out)
    assert row["end_reason"].startswith("budget: ") and row["budget_usd"] == 0.21

    _pass(10.4, "bud")        # within the drain window the nodes are still up: terminated
    assert cloud.instances("bud") == {} and "bud" not in cloud.leases()
    record = _annex("bud")
    assert record.ended_at is not None
    assert record.spec["ended_reason"].startswith("budget: $0.19 spent of its $0.21 budget")
    assert record.spec["ended_reason"].endswith("the nodes still up are terminated")
    # What status shows from the store while annexd runs: the pass kept the ended annex.
    with Store(default_path({})) as store:
        _at, seen = store.observations()
    assert seen["bud"]["end_reason"] == record.spec["ended_reason"]
    code, out, _ = run(["status", "bud", "--json"], capsys)
    (row,) = json.loads(out)
    assert code == 0 and row["end_reason"] == record.spec["ended_reason"]
    code, out, _ = run(["status", "bud"], capsys)
    assert "bud: budget: $0.19 spent of its $0.21 budget" in out and "; ended: " in out


def test_a_drained_annex_whose_nodes_left_is_ended_at_once(cloud, capsys):
    _budgeted(cloud, capsys, "gone", 0.21)
    _pass(9.6, "gone")
    # The agents powered the nodes off (shutdown behaviour terminate).
    from condor_annex.providers.aws.session import make_client
    ec2 = make_client(cloud.aws, "ec2")
    ec2.terminate_instances(InstanceIds=list(cloud.instances("gone")))
    _pass(9.7, "gone")
    record = _annex("gone")
    assert record.ended_at is not None
    assert record.spec["ended_reason"].endswith("ended: its nodes left the pool")


def test_an_annex_within_its_budget_is_never_drained(cloud, capsys):
    _budgeted(cloud, capsys, "roomy", 100)
    _pass(30, "roomy")
    assert len(cloud.instances("roomy")) == 2
    assert not any(TAG_ANNEX_OFF in t for t in cloud.instances("roomy").values())
    assert DRAIN_KEY not in _annex("roomy").spec


def test_an_ended_instance_has_its_cost_kept_and_tagged_on_the_live_ones(cloud, capsys):
    _budgeted(cloud, capsys, "half", 5)
    from condor_annex.providers.aws.session import make_client
    first, second = sorted(cloud.instances("half"))
    make_client(cloud.aws, "ec2").terminate_instances(InstanceIds=[first])
    _pass(2, "half")     # the store sees it end
    _pass(3, "half")     # its cost is kept
    kept = _annex("half").spec[ENDED_KEY]
    assert set(kept) == {first} and 0 < kept[first] <= 0.03
    (value,) = {t[TAG_BUDGET] for t in cloud.instances("half").values()}
    assert value.split()[0] == "5" and value.split()[-1] == f"spent={kept[first]:.6f}"
