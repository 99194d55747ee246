"""The main job end to end, on the local cloud, with shorter times than the demo.

Each test fails if a node never joins, a job runs somewhere other than the annex, or an
instance (or the bundle, or the lease) outlives the annex.
"""

from __future__ import annotations

import json
import time

import pytest

from condor_annex.model import (SPOT_API_EC2_FLEET, SPOT_API_SPOT_FLEET, AnnexSpec, SpotSpec,
                                parse_spot_fleet_config)
from condor_annex.pool.collector import annex_slots
from condor_annex.providers.aws import fleet
from condor_annex.providers.aws.session import make_client
from condor_annex.providers.local import jobs as local_jobs
from condor_annex.service import annex as svc

pytestmark = pytest.mark.e2e


def _alive(ctx, name):
    return {iid for iid, i in ctx.provider(ctx.setup_outputs()).query_instances(name).items()
            if i.state in ("pending", "running")}


def _wait_jobs(cluster, n, timeout_s=180):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = [r for r in local_jobs.jobs(cluster) if r.status == 4]
        if len(done) >= n:
            return done
        time.sleep(1)
    pytest.fail(f"jobs of cluster {cluster} not done after {timeout_s} s: "
                f"{local_jobs.jobs(cluster)}")


def _wait_gone(ctx, name, timeout_s):
    t0 = time.monotonic()
    while _alive(ctx, name):
        if time.monotonic() - t0 > timeout_s:
            pytest.fail(f"annex {name}: instances {_alive(ctx, name)} outlived it by "
                        f"{timeout_s} s")
        time.sleep(1)
    return time.monotonic() - t0


def _assert_cleaned(ctx, name, timeout_s=30):
    provider = ctx.provider(ctx.setup_outputs())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (provider.bundle_exists(name)
                                           or provider.get_lease(name)):
        time.sleep(1)
    assert not provider.bundle_exists(name), "the bundle outlived the annex"
    assert provider.get_lease(name) is None, "the lease outlived the annex"


def test_jobs_run_on_annex_nodes_and_the_annex_ends_when_idle(local_cloud):
    ctx = local_cloud
    spec = AnnexSpec(name="e2e-idle", count=2, lease_seconds=600, idle_seconds=20,
                     owners=("annexuser",))
    t0 = time.monotonic()
    created = svc.create_annex(ctx, spec)
    assert len(created.instance_ids) == 2
    assert svc.wait_for_join(ctx, spec.name, 2, timeout_s=120) == 2
    join_s = time.monotonic() - t0

    status = svc.annex_status(ctx, spec.name)[0]
    assert (status.requested, status.running, status.joined) == (2, 2, 2)
    # Nodes advertise AnnexName / IsAnnex / EC2InstanceID: HTCondor's own condor_status -annex
    # lists them, with the instance ids the cloud knows.
    listed = local_jobs.condor_status_annex(spec.name)
    assert {iid for _, iid in listed} == set(created.instance_ids), listed
    assert status.lease_seconds_left() > 500

    cluster = local_jobs.submit(spec.name, 4, sleep_s=2)
    done = _wait_jobs(cluster, 4)
    assert {r.annex_name for r in done} == {spec.name}
    assert {r.instance_id for r in done} <= set(created.instance_ids), done

    idle_end_s = _wait_gone(ctx, spec.name, timeout_s=120)
    _assert_cleaned(ctx, spec.name)
    print(f"\nE2E: 2 joined in {join_s:.1f} s; idle end after {idle_end_s:.1f} s")


def test_the_lease_ends_the_annex_within_60_s(local_cloud):
    ctx = local_cloud
    spec = AnnexSpec(name="e2e-lease", count=1, lease_seconds=25, idle_seconds=3600,
                     owners=("annexuser",))
    created = svc.create_annex(ctx, spec)
    assert svc.wait_for_join(ctx, spec.name, 1, timeout_s=60) == 1
    lease_end = created.lease_expires_at.timestamp()

    _wait_gone(ctx, spec.name, timeout_s=spec.lease_seconds + 90)
    overrun = time.time() - lease_end
    assert overrun <= 60, f"lease overrun {overrun:.0f} s"
    _assert_cleaned(ctx, spec.name)
    print(f"\nE2E: lease overrun {overrun:.1f} s")


def test_off_ends_everything_and_leaves_other_annexes(local_cloud):
    ctx = local_cloud
    for name in ("e2e-off", "e2e-offx"):
        svc.create_annex(ctx, AnnexSpec(name=name, count=1, lease_seconds=600,
                                        idle_seconds=3600, owners=("annexuser",)))
    assert svc.wait_for_join(ctx, "e2e-off", 1, timeout_s=60) == 1
    cluster = local_jobs.submit("e2e-off", 1, sleep_s=600)
    deadline = time.monotonic() + 60
    while [r.status for r in local_jobs.jobs(cluster)] != [2]:     # running
        assert time.monotonic() < deadline, local_jobs.jobs(cluster)
        time.sleep(1)

    try:
        t0 = time.monotonic()
        result = svc.end_annex(ctx, "e2e-off")
        off_s = time.monotonic() - t0
        assert len(result.terminated) == 1 and result.lease_deleted and result.bundle_deleted
        # The node left the pool gracefully (condor_off style) instead of being cut off: its
        # slot withdrew its ad at once, and the running job went back to the queue.
        assert result.left_pool == result.terminated, result
        assert annex_slots(ctx.collector, "e2e-off") == []
        assert [r.status for r in local_jobs.jobs(cluster)] == [1]   # idle again, not lost
    finally:
        local_jobs.remove(cluster)
    _wait_gone(ctx, "e2e-off", timeout_s=30)
    _assert_cleaned(ctx, "e2e-off", timeout_s=1)
    # The other annex, whose name starts with the same letters, is untouched.
    assert len(_alive(ctx, "e2e-offx")) == 1
    provider = ctx.provider(ctx.setup_outputs())
    assert provider.get_lease("e2e-offx") is not None and provider.bundle_exists("e2e-offx")
    hard = svc.end_annex(ctx, "e2e-offx", grace_s=0)
    assert hard.left_pool == () and len(hard.terminated) == 1
    _wait_gone(ctx, "e2e-offx", timeout_s=30)
    print(f"\nE2E: off with a graceful leave took {off_s:.1f} s")


def test_spot_annexes_of_weighted_capacity_4_join_and_end_by_their_lease(local_cloud):
    # Both Spot APIs at once: classic -slots (RequestSpotFleet, from a Spot Fleet config) and
    # modern --spot (CreateFleet with a launch template); weight 2 -> 2 instances each.
    ctx = local_cloud
    # The Spot Fleet role setup made: AWS (and the strict local cloud) refuse one that does
    # not exist.
    role = ctx.setup_outputs().spot_fleet_role_arn
    spot_fleet = SpotSpec(api=SPOT_API_SPOT_FLEET, spot_fleet_config=parse_spot_fleet_config(
        json.dumps({"IamFleetRole": role,
                    "LaunchSpecifications": [{"InstanceType": "m5.large",
                                              "WeightedCapacity": 2}]})))
    ec2_fleet = SpotSpec(api=SPOT_API_EC2_FLEET, instance_types=(("m5.large", 2.0),
                                                                  ("c5.large", 2.0)))
    created = {}
    for name, spot in (("e2e-sfr", spot_fleet), ("e2e-fleet", ec2_fleet)):
        spec = AnnexSpec(name=name, count=4, lease_seconds=40, idle_seconds=3600,
                         owners=("annexuser",))
        created[name] = svc.create_spot_annex(ctx, spec, spot)
        assert created[name].fleet_id
    for name in created:
        assert svc.wait_for_join(ctx, name, 2, timeout_s=90) == 2
        st = svc.annex_status(ctx, name)[0]
        assert (st.running, st.joined) == (2, 2), st

    ec2 = make_client(ctx.aws, "ec2")
    for name, result in created.items():
        _wait_gone(ctx, name, timeout_s=40 + 90)
        overrun = time.time() - result.lease_expires_at.timestamp()
        assert overrun <= 60, f"{name}: lease overrun {overrun:.0f} s"
        _assert_cleaned(ctx, name)
        assert fleet.annex_spot_fleet_requests(ec2, name) == []
        assert fleet.annex_fleets(ec2, name) == []
        assert fleet._annex_templates(ec2, name) == []
        print(f"\nE2E: spot annex {name} ended by its lease, overrun {overrun:.1f} s")
