"""SIGKILL at every step converges (issue 11): the command line, and condor_annexd, killed
after each cloud request that changes something, then any ``condor_annex`` command (or the
daemon's next pass) leaves each annex either whole or gone, never half-made, with 0 orphans
and 0 duplicate launches.

Each command runs in a process of its own through the AWS gateway in front of moto; the
gateway holds the request after the k-th (``hold("*", after=k)``) and the process is killed
while it waits, so the k requests before it reached the cloud and nothing after did (the held
one is then let through, as a request already on the wire would be).  Reads change nothing, so
killing after a read is the same as killing before the next change: only the requests that
change the cloud are kill points.  What is left is read from moto directly, past the gateway's
listing lag.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from condor_annex.model import TAG_ANNEX_NAME, TAG_LEASE_END
from condor_annex.providers.aws.session import make_client
from condor_annex.state.store import Store, default_path
from tests.aws.test_create_safety import cli, cloud, run  # noqa: F401 - the fixture
from tests.aws.test_extend import _sfr_file

__all__ = ["cloud"]

#: Requests that change the cloud (the kill points); reads are not.
CHANGES = re.compile(r"\.(Create|Put|Run|Request|Delete|Terminate|Cancel|Update|Add|Remove|"
                     r"Attach|Detach|Modify|Tag|Untag)")

#: How each kind of annex is created, two instances (or capacity 2) each.
CREATES = {
    "on-demand": lambda n, _: ["create", n, "--count", "2"],
    "ec2-fleet": lambda n, _: ["create", n, "--spot", "--capacity", "2", "--instance-types",
                               "m5.large"],
    "spot-fleet": lambda n, sfr: ["-annex-name", n, "-slots", "2",
                                  "-aws-spot-fleet-config-file", sfr(), "-yes"],
}


def _changes(cloud, argv) -> list[int]:
    """Run ``argv`` once to the end; the positions k (1-based) of its requests that change the
    cloud, but the last request (after it the command is done).  The command must then meet
    the same store (live annexes or none) when it is killed.

    The new instance profile's propagation delay is switched off: its refusals make the number
    of RunInstances attempts, hence the positions, vary from run to run (retries are tested in
    test_create_safety.py)."""
    cloud.gateway.profile_age_s = 0
    cloud.gateway.reset_counts()
    proc = cli(*argv)
    assert proc.wait(timeout=180) == 0, proc.stderr.read()
    ops = [op for op, _ in cloud.gateway.trace]
    cloud.last_ops = ops
    return [k for k, op in enumerate(ops, 1) if CHANGES.search(op) and k < len(ops)]


def _kill_after(cloud, k: int, argv) -> None:
    """Start ``argv`` in its own process, SIGKILL it once its k-th request went through."""
    held = cloud.gateway.hold("*", after=k)
    proc = cli(*argv)
    held.wait_held(timeout=90)
    proc.kill()
    proc.wait(timeout=30)
    held.release()
    time.sleep(0.2)   # the request that was on the wire reaches moto


def _daemon(*extra: str) -> subprocess.Popen:
    """``condor_annexd --once`` in a process of its own."""
    return subprocess.Popen([sys.executable, "-m", "condor_annex.daemon.main", "--once",
                             *extra], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


class Seen:
    """Everything of one annex in moto (read directly, past the listing lag)."""

    def __init__(self, cloud, name: str) -> None:
        ec2 = make_client(cloud.aws, "ec2")
        self.alive = cloud.instances(name)
        self.ever = [i for r in ec2.describe_instances(Filters=[
            {"Name": f"tag:{TAG_ANNEX_NAME}", "Values": [name]}])["Reservations"]
            for i in r["Instances"]]
        self.lease = cloud.leases().get(name)
        self.bundle = name in cloud.bundles()
        self.role = name in cloud.roles()
        self.fleets = [f["FleetId"] for f in ec2.describe_fleets()["Fleets"]
                       if f["FleetState"] in ("submitted", "active", "modifying")
                       and {"Key": TAG_ANNEX_NAME, "Value": name} in f.get("Tags", [])]
        self.fleets += [r["SpotFleetRequestId"] for r in ec2.describe_spot_fleet_requests()[
            "SpotFleetRequestConfigs"] if r["SpotFleetRequestState"] in (
            "submitted", "active", "modifying") and {"Key": TAG_ANNEX_NAME, "Value": name}
            in r.get("Tags", [])]
        self.templates = [t["LaunchTemplateId"] for t in ec2.describe_launch_templates()[
            "LaunchTemplates"] if {"Key": TAG_ANNEX_NAME, "Value": name} in t.get("Tags", [])]

    @property
    def gone(self) -> bool:
        return not (self.alive or self.lease or self.bundle or self.role or self.fleets
                    or self.templates)

    def whole(self, count: int) -> bool:
        return bool(self.lease and self.bundle and len(self.alive) == count)

    def __repr__(self) -> str:
        return (f"alive={sorted(self.alive)} ever={len(self.ever)} lease={self.lease} "
                f"bundle={self.bundle} role={self.role} fleets={self.fleets} "
                f"templates={self.templates}")


def _store_annex(name: str):
    with Store(default_path({})) as store:
        return store.annex(name), store.launch_requests(name)


def assert_converged(cloud, name: str, count: int, where: str) -> str:
    """The annex is whole (lease, bundle, ``count`` live instances, its launches recorded as
    launched) or gone (nothing of it left, ended in the store); never more than ``count``
    instances were launched; no orphan anywhere.  Returns "whole" or "gone"."""
    seen = Seen(cloud, name)
    assert cloud.orphans() == [], where
    assert len(seen.ever) <= count, f"{where}: duplicate launch: {seen}"
    record, requests = _store_annex(name)
    if seen.gone:
        assert record is None or record.ended_at is not None, f"{where}: store {record}"
        return "gone"
    assert seen.whole(count), f"{where}: half-made: {seen}"
    assert record is not None and record.ended_at is None, where
    assert [r.state for r in requests] == ["launched"], f"{where}: {requests}"
    return "whole"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("kind", list(CREATES))
def test_a_create_killed_after_each_change_converges_on_the_next_command(
        kind, cloud, tmp_path, capsys):
    create = CREATES[kind]
    made: list[str] = []

    def sfr() -> str:   # the Spot Fleet config file (its IAM fleet role made once)
        if not made:
            made.append(_sfr_file(cloud, tmp_path))
        return made[0]

    # Warm what a create caches (the day's prices): every later create makes the same
    # requests as the probe.
    assert run([*create("warm", sfr)], capsys)[0] == 0
    assert run(["off", "warm", "--grace", "0"], capsys)[0] == 0
    points = _changes(cloud, create("probe", sfr))
    assert len(points) >= 3, points
    # A live annex in the store makes each command run a reconciler pass first (more
    # requests): the probe ends, so that every killed create makes the requests probed.
    assert run(["off", "probe", "--grace", "0"], capsys)[0] == 0
    outcomes = {}
    for k in points:
        name = f"c{k}"
        _kill_after(cloud, k, create(name, sfr))
        code, _, err = run(["status", "--json"], capsys)   # any command converges
        assert code == 0, err
        outcomes[k] = assert_converged(cloud, name, 2, f"{kind} killed after request {k}")
        if outcomes[k] == "whole":   # keep the store empty: the positions stay those probed
            assert run(["off", name, "--grace", "0"], capsys)[0] == 0
    print(f"\n[crash battery] create {kind}: killed after each of {len(points)} changes: "
          f"{sum(v == 'gone' for v in outcomes.values())} undone, "
          f"{sum(v == 'whole' for v in outcomes.values())} kept whole")
    # Killed before its launch: undone; after it: kept.  Both happen.
    assert set(outcomes.values()) == {"gone", "whole"}, \
        "; ".join(f"{k} {op}: {outcomes.get(k, '-')}" for k, op in enumerate(cloud.last_ops, 1))


@pytest.mark.timeout(600)
def test_an_extend_killed_after_each_change_leaves_tags_and_store_on_the_lease(cloud, capsys):
    assert run(["create", "probe", "--count", "2", "--duration", "1h"], capsys)[0] == 0
    points = _changes(cloud, ["extend", "probe", "3h"])
    assert points, "extend changes nothing?"
    ec2 = make_client(cloud.aws, "ec2")
    for k in points:
        name = f"x{k}"
        assert run(["create", name, "--count", "2", "--duration", "1h"], capsys)[0] == 0
        _kill_after(cloud, k, ["extend", name, "3h"])
        assert run(["status", "--json"], capsys)[0] == 0
        lease = cloud.leases()[name]
        tags = {i["InstanceId"]: {t["Key"]: t["Value"] for t in i["Tags"]}[TAG_LEASE_END]
                for r in ec2.describe_instances(Filters=[
                    {"Name": f"tag:{TAG_ANNEX_NAME}", "Values": [name]},
                    {"Name": "instance-state-name", "Values": ["pending", "running"]}])[
                    "Reservations"] for i in r["Instances"]}
        assert len(tags) == 2 and set(tags.values()) == {str(lease)}, \
            f"extend killed after request {k}: lease {lease}, tags {tags}"
        record, _ = _store_annex(name)
        assert round(record.lease_end.timestamp()) == lease, k
    print(f"\n[crash battery] extend: killed after each of {len(points)} changes: converged")


@pytest.mark.timeout(600)
def test_an_off_killed_after_each_change_is_finished_by_the_next_command(cloud, capsys):
    assert run(["create", "probe", "--count", "2"], capsys)[0] == 0
    points = _changes(cloud, ["off", "probe", "--grace", "0"])
    assert len(points) >= 3, points
    for k in points:
        name = f"o{k}"
        assert run(["create", name, "--count", "2"], capsys)[0] == 0
        _kill_after(cloud, k, ["off", name, "--grace", "0"])
        assert run(["status", "--json"], capsys)[0] == 0
        assert assert_converged(cloud, name, 2, f"off killed after request {k}") == "gone"
    print(f"\n[crash battery] off: killed after each of {len(points)} changes: finished")


@pytest.mark.timeout(600)
def test_annexd_killed_after_each_change_of_its_pass_converges_on_its_restart(cloud, capsys):
    """An off dies after its first change; annexd finishes it: killed after each of its own
    changes, restarted, its next pass still converges."""
    assert run(["create", "probe", "--count", "2"], capsys)[0] == 0
    off_points = _changes(cloud, ["off", "probe", "--grace", "0"])

    def half_off(name: str) -> None:
        assert run(["create", name, "--count", "2"], capsys)[0] == 0
        _kill_after(cloud, off_points[0], ["off", name, "--grace", "0"])

    half_off("dprobe")
    cloud.gateway.reset_counts()
    proc = _daemon()
    assert proc.wait(timeout=180) == 0, proc.stderr.read()
    ops = [op for op, _ in cloud.gateway.trace]
    points = [k for k, op in enumerate(ops, 1) if CHANGES.search(op) and k < len(ops)]
    assert assert_converged(cloud, "dprobe", 2, "annexd, not killed") == "gone"
    assert points, ops
    for k in points:
        name = f"d{k}"
        half_off(name)
        held = cloud.gateway.hold("*", after=k)
        proc = _daemon()
        held.wait_held(timeout=90)
        proc.kill()
        proc.wait(timeout=30)
        held.release()
        time.sleep(0.2)
        again = _daemon()
        assert again.wait(timeout=180) == 0, again.stderr.read()
        assert assert_converged(cloud, name, 2, f"annexd killed after request {k}") == "gone"
    print(f"\n[crash battery] annexd: killed after each of {len(points)} changes of its pass: "
          "converged on restart")


def test_a_profile_left_without_its_role_is_deleted_with_the_annex(cloud, capsys):
    """Regression (found by the battery): a create killed between CreateInstanceProfile and
    AddRoleToInstanceProfile left a profile without its role; ending the annex stopped at
    RemoveRoleFromInstanceProfile, which IAM answers NoSuchEntity (moto: a 500 page), and the
    profile and role stayed for ever."""
    iam = make_client(cloud.aws, "iam")
    from condor_annex.providers.aws.annex_role import role_name
    name = role_name("halfrole")
    iam.create_role(RoleName=name, Path="/condor-annex/annex/", AssumeRolePolicyDocument="{}")
    iam.create_instance_profile(InstanceProfileName=name, Path="/condor-annex/annex/")
    from condor_annex.service.context import Context
    ctx = Context.load()   # through the gateway, as every command
    assert ctx.provider(ctx.setup_outputs()).delete_annex_role("halfrole") is True
    assert "halfrole" not in cloud.roles()
    assert name not in [p["InstanceProfileName"]
                        for p in iam.list_instance_profiles()["InstanceProfiles"]]
