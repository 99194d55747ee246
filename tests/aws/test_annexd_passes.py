"""condor_annexd's passes on the moto server (in-process, one pass at a time): what it ends,
what it only reports, what it records for ``daemon status`` and ``status``."""

from __future__ import annotations

import json

from condor_annex.daemon.main import Daemon
from condor_annex.providers.aws import orphans
from condor_annex.service.context import Context
from condor_annex.state.store import Store, default_path
from tests.aws.test_create_safety import cloud, run  # noqa: F401 - the fixture

__all__ = ["cloud"]


def _daemon() -> Daemon:
    ctx = Context.load()
    return Daemon(ctx, default_path(ctx.knobs))


def test_an_orphan_is_reported_on_one_pass_and_ended_on_the_next(cloud, capsys, monkeypatch):
    monkeypatch.setattr(orphans, "GRACE_S", 0)   # planted just now
    assert run(["create", "healthy", "--count", "1"], capsys)[0] == 0
    ctx = Context.load()
    ctx.provider(ctx.setup_outputs()).put_bundle("lonely", b"bundle")   # no lease, no store
    daemon = _daemon()
    daemon.one_pass()
    assert "lonely" in cloud.bundles()                                  # reported only
    assert [(o["annex"], o["kind"]) for o in daemon.report["orphans"]] == [("lonely", "bundle")]
    daemon.one_pass()
    assert "lonely" not in cloud.bundles() and daemon.report["reaped"] == ["lonely"]
    assert len(cloud.instances("healthy")) == 1 and "healthy" in cloud.leases()
    with Store(default_path({})) as store:
        at, report = store.daemon_report()
    assert report["passes"] == 2 and report["last_pass"]["annexes"] == 1


def test_a_pass_records_what_status_shows_from_the_store(cloud, capsys):
    assert run(["create", "seen", "--count", "2"], capsys)[0] == 0
    _daemon().one_pass()
    with Store(default_path({})) as store:
        at, seen = store.observations()
    row = seen["seen"]
    assert at is not None and row["running"] == 2 and row["requested"] == 2
    assert sum(row["lifecycle"].values()) == 2 and len(row["instances"]) == 2
    # status --json keeps today's fields beside the new ones
    code, out, _ = run(["status", "--json"], capsys)
    (live,) = json.loads(out)
    for key in ("name", "requested", "running", "joined", "idle_slots", "busy_slots",
                "lease_expires_at", "states"):
        assert key in live
    assert live["lifecycle"] == row["lifecycle"]


def test_an_annex_whose_lease_passed_is_ended_by_a_pass(cloud, capsys):
    assert run(["create", "short", "--count", "1"], capsys)[0] == 0
    ctx = Context.load()
    provider = ctx.provider(ctx.setup_outputs())
    # The lease enforcer did not run (a Scheduler outage): the schedule is still there but
    # its time has passed.
    from datetime import timedelta

    from condor_annex.model import utcnow
    lease = provider.get_lease("short")
    provider.extend_lease(lease, utcnow() - timedelta(minutes=1))
    _daemon().one_pass()
    assert cloud.instances("short") == {} and "short" not in cloud.leases()
    with Store(default_path({})) as store:
        assert store.annex("short").ended_at is not None


def test_a_node_that_never_joined_is_ended_with_the_agents_verdict_as_its_reason(cloud, capsys):
    """The agent's log says the collector was unreachable: status gives that as the reason,
    and the console and agent log are kept in the store."""
    from condor_annex.providers.aws.session import make_client
    from condor_annex.reconciler.actions import SaveConsole, Terminate
    from condor_annex.reconciler.execute import Executor
    from condor_annex.state.lifecycle import Lifecycle
    assert run(["create", "blocked", "--count", "1"], capsys)[0] == 0
    (iid,) = cloud.instances("blocked")
    verdict = ("collector 10.1.2.3:9618 unreachable from this instance for 121 s (timed out)")
    make_client(cloud.aws, "s3").put_object(
        Bucket=cloud.outputs.bucket, Key=f"logs/blocked/{iid}/agent.log",
        Body=f"2026-01-01T00:00:00Z condor-annex-agent ERROR {verdict}: check ...\n".encode())
    ctx = Context.load()
    with Store(default_path({})) as store:
        store.set_instance_state(iid, expected="requested", to="allocated", reason="seen")
        store.set_instance_state(iid, expected="allocated", to="never-joined", reason="late")
        done = Executor(ctx.provider(ctx.setup_outputs()), store, cloud.outputs.bucket).run([
            SaveConsole(iid, "blocked", "never joined"),
            Terminate((iid,), "blocked", "never joined")])
        assert done.errors == () and done.done == 2
        assert store.instance(iid).state == Lifecycle.TERMINATING.value
        assert store.transitions(iid)[-1].reason == \
            f"never joined: {verdict}; see condor_annex logs blocked {iid}"
        assert verdict in store.saved_log(iid).agent_log
    assert cloud.instances("blocked") == {}


def test_a_never_joined_node_without_a_verdict_keeps_the_deadline_reason_when_ended(
        cloud, capsys):
    """Regression (e2e): status said only "never joined", without the logs command, because
    the terminate's short reason replaced the never-joined one."""
    from condor_annex.reconciler.actions import SaveConsole, Terminate
    from condor_annex.reconciler.execute import Executor
    assert run(["create", "late", "--count", "1"], capsys)[0] == 0
    (iid,) = cloud.instances("late")
    why = f"never joined: no startd ad 600 s after launch; see condor_annex logs late {iid}"
    ctx = Context.load()
    with Store(default_path({})) as store:
        store.set_instance_state(iid, expected="requested", to="allocated", reason="seen")
        store.set_instance_state(iid, expected="allocated", to="never-joined", reason=why)
        Executor(ctx.provider(ctx.setup_outputs()), store, cloud.outputs.bucket).run([
            SaveConsole(iid, "late", why), Terminate((iid,), "late", "never joined")])
        assert store.transitions(iid)[-1].reason == why


def test_off_of_an_annex_the_commands_own_pass_ended_succeeds(cloud, capsys):
    """Regression (e2e kill switches): the lease passed with its enforcer broken; off's own
    reconciler pass ended the annex first, and off then said it did not exist (exit 2)."""
    from datetime import timedelta

    from condor_annex.model import utcnow
    assert run(["create", "late", "--count", "1"], capsys)[0] == 0
    ctx = Context.load()
    provider = ctx.provider(ctx.setup_outputs())
    provider.extend_lease(provider.get_lease("late"), utcnow() - timedelta(minutes=1))
    assert run(["off", "late", "--grace", "0"], capsys)[0] == 0
    assert cloud.instances("late") == {} and "late" not in cloud.leases()
