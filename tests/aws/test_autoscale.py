"""Demand-driven annexes (issue 13) on the moto server: ``create --autoscale`` records the
bounds and starts with ``--min``; condor_annexd's passes launch the growth as ``create`` adds
to an annex (client token ``NAME_<uuid>``), never beyond ``--max``; a command's own pass never
launches; bad bounds create nothing."""

from __future__ import annotations

import json

import pytest

from condor_annex import config
from condor_annex.daemon.main import Daemon
from condor_annex.model import TAG_IDLE_SHUTDOWN, TAG_LAUNCH_TOKEN
from condor_annex.pool.demand import DemandView
from condor_annex.reconciler import observe
from condor_annex.service.context import Context
from condor_annex.service.converge import reconcile_once
from condor_annex.state.store import Store, default_path
from tests.aws.test_create_safety import cloud, run  # noqa: F401 - the fixture

__all__ = ["cloud"]


@pytest.fixture
def queue(cloud, monkeypatch):
    """The pool as the passes see it: no annex slot yet, and ``queue["jobs"]`` idle jobs per
    annex (``queue["unanswered"]``: schedds that did not answer)."""
    config.write_block("autoscale-test", {"COLLECTOR_HOST": "127.0.0.1:9618",
                                          "ANNEX_AUTOSCALE_SETTLE": "0"})
    state: dict = {"jobs": {}, "unanswered": ()}
    monkeypatch.setattr(observe, "annex_slots", lambda _c: [])
    monkeypatch.setattr(observe, "annex_demand", lambda _c, templates: DemandView(
        {n: state["jobs"].get(n, 0) for n in templates}, tuple(state["unanswered"]), 1))
    return state


def _daemon() -> Daemon:
    ctx = Context.load()
    return Daemon(ctx, default_path(ctx.knobs))


def test_annexd_grows_an_annex_from_zero_with_its_own_tokens_and_never_beyond_max(
        cloud, queue, capsys):
    code, out, err = run(["create", "as1", "--autoscale", "--max", "3", "--min", "0",
                          "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["instances"] == [] and cloud.instances("as1") == {}
    assert "as1" in cloud.leases() and "as1" in cloud.bundles()
    with Store(default_path({})) as store:
        rec = store.autoscale()["as1"]
    assert (rec.min_count, rec.max_count) == (0, 3)
    assert rec.template["Cpus"] == 2 and rec.template["AnnexName"] == "as1"   # m4.large
    queue["jobs"] = {"as1": 12}        # 12 jobs want 6 nodes of 2 cores; --max 3
    daemon = _daemon()
    for _ in range(3):
        daemon.one_pass()
        assert len(cloud.instances("as1")) <= 3
    grown = cloud.instances("as1")
    assert len(grown) == 3
    with Store(default_path({})) as store:
        tokens = {r.client_token for r in store.launch_requests("as1") if r.state == "launched"}
    for tags in grown.values():
        assert tags[TAG_LAUNCH_TOKEN].startswith("as1_") and tags[TAG_LAUNCH_TOKEN] in tokens
        assert TAG_IDLE_SHUTDOWN not in tags   # grown nodes leave by their idle timeout
    code, out, _ = run(["status", "as1", "--json"], capsys)
    (row,) = json.loads(out)
    assert row["autoscale"]["max"] == 3 and row["autoscale"]["demand"] == 12
    assert row["autoscale"]["why"].endswith("at max (3)")
    code, out, _ = run(["status", "as1"], capsys)
    assert "as1: autoscale 0..3: demand 12, target 3:" in out


def test_min_nodes_carry_no_idle_shutdown(cloud, queue, capsys):
    assert run(["create", "as2", "--autoscale", "--max", "2", "--min", "1"], capsys)[0] == 0
    ((tags),) = cloud.instances("as2").values()
    assert tags[TAG_IDLE_SHUTDOWN] == "off"


def test_a_commands_own_pass_never_launches(cloud, queue, capsys):
    assert run(["create", "as3", "--autoscale", "--max", "2"], capsys)[0] == 0
    queue["jobs"] = {"as3": 5}
    reconcile_once(Context.load())          # what a command runs when no daemon serves
    assert run(["status", "as3", "--refresh"], capsys)[0] == 0
    assert cloud.instances("as3") == {}


def test_a_schedd_that_does_not_answer_holds_the_size(cloud, queue, capsys):
    assert run(["create", "as4", "--autoscale", "--max", "2"], capsys)[0] == 0
    queue["jobs"], queue["unanswered"] = {"as4": 5}, ("submit@cm",)
    _daemon().one_pass()
    assert cloud.instances("as4") == {}
    with Store(default_path({})) as store:
        assert store.autoscale()["as4"].why == "holding: schedd submit@cm did not answer"


@pytest.mark.parametrize("argv, message", [
    (["--autoscale"], "--autoscale: give the most instances"),
    (["--autoscale", "--max", "2", "--min", "3"], "--max: 2 is below --min 3"),
    (["--autoscale", "--max", "-1"], "--max: -1 is not a whole number"),
    (["--autoscale", "--max", "2.5"], "--max: 2.5 is not a whole number"),
    (["--autoscale", "--max", "2", "--min", "-1"], "--min: -1 is not a whole number"),
    (["--max", "2"], "--max: only with --autoscale"),
    (["--autoscale", "--max", "2", "--count", "1"], "--count: an autoscaled annex"),
    (["--autoscale", "--max", "100000"], "--max: 100000 is out of range"),
])
def test_bad_bounds_are_one_line_exit_2_and_nothing_is_created(cloud, capsys, argv, message):
    code, out, err = run(["create", "bad", *argv], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert cloud.instances("bad") == {} and "bad" not in cloud.leases()


def test_max_above_the_vcpu_quota_is_refused_before_anything_is_made(cloud, capsys):
    # m4.large has 2 vCPUs; the emulated account's standard-instances quota is 256 vCPUs.
    code, _, err = run(["create", "big", "--autoscale", "--max", "200"], capsys)
    assert code == 2 and "--max: 200 x m4.large need 400 vCPUs, above your account's quota " \
        "of 256" in err, err
    assert cloud.instances("big") == {} and "big" not in cloud.leases()


def test_the_classic_syntax_autoscales_with_its_knobs(cloud, capsys):
    config.write_block("classic-autoscale", {"ANNEX_AUTOSCALE_MAX": "3",
                                             "ANNEX_AUTOSCALE_MIN": "0"})
    code, out, err = run(["-annex-name", "cl1", "-count", "2", "-yes"], capsys)
    assert code == 0, err
    assert cloud.instances("cl1") == {} and "cl1" in cloud.leases()
    with Store(default_path({})) as store:
        rec = store.autoscale()["cl1"]
    assert (rec.min_count, rec.max_count) == (0, 3)


def test_a_bad_classic_knob_is_one_line_exit_2_and_nothing_is_created(cloud, capsys):
    config.write_block("classic-autoscale", {"ANNEX_AUTOSCALE_MAX": "1"})
    code, out, err = run(["-annex-name", "cl2", "-count", "2", "-yes"], capsys)
    assert code == 2 and "ANNEX_AUTOSCALE_MAX: 1 is below -count 2" in err, err
    assert cloud.instances("cl2") == {} and "cl2" not in cloud.leases()


def test_a_decision_older_than_the_daemons_pass_is_dropped_not_launched(cloud, capsys):
    # A command's pass (or a pass that left a busy annex alone) decided earlier; the daemon
    # launches only what its own pass decided.
    from datetime import timedelta

    from condor_annex.model import utcnow
    from condor_annex.service.autoscale_launch import launch_wanted
    assert run(["create", "as5", "--autoscale", "--max", "2"], capsys)[0] == 0
    with Store(default_path({})) as store:
        store.set_autoscale("as5", want=2, why="old", at=utcnow() - timedelta(minutes=5))
    assert launch_wanted(Context.load(), since=utcnow()) == []
    assert cloud.instances("as5") == {}
    with Store(default_path({})) as store:
        assert store.autoscale()["as5"].want == 0
