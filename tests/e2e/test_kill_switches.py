"""The lease holds on the strict local cloud: each of the three kill switches alone ends an
annex at its lease, and ``extend`` moves the lease of every kind of annex (issue 9).

The local cloud fires one-time schedules at a random second of their minute (possibly before
the lease end), retries a failed lease function twice and then drops its event into the failure
queue, as AWS does; the e2e session runs it with CONDOR_ANNEX_TIME_SCALE=10 (tests/e2e/
conftest.py), so the sweep's 5 minutes take 30 s and Lambda's retries 6 s and 12 s.  Faults are
injected with ``condor_annex local inject``; a kill switch is switched off to isolate another.
"""

from __future__ import annotations

import base64
import json
import math
import time

import pytest

from condor_annex.cli.main import main
from condor_annex.model import SPOT_API_EC2_FLEET, SPOT_API_SPOT_FLEET, AnnexSpec, SpotSpec, \
    parse_spot_fleet_config
from condor_annex.pool.collector import annex_slots
from condor_annex.providers.aws.session import make_client
from condor_annex.providers.local import cloud as local_cloud_module
from condor_annex.providers.local.clock import time_scale_from_env
from condor_annex.providers.local.inject import set_lease_sweep
from condor_annex.service import annex as svc

pytestmark = pytest.mark.e2e

#: The lease sweep's period on AWS (the stack's rate(5 minutes)), seconds.
SWEEP_PERIOD_S = 300


def _inject(*words: str) -> None:
    assert main(["local", "inject", *words]) == 0


@pytest.fixture
def clean_injections(local_cloud):
    _inject("none")
    yield
    _inject("none")


def _sweep_state(ctx, state: str) -> None:
    """Enable or disable the stack's lease sweep schedule (to isolate another kill switch)."""
    set_lease_sweep(make_client(ctx.aws, "scheduler"), ctx.setup_outputs().stack_name,
                    state == "ENABLED")


def _start(ctx, names: list[str], lease_s: int) -> dict[str, float]:
    """Create one-instance annexes at once, wait until they joined; lease end per annex."""
    ends = {}
    for name in names:
        spec = AnnexSpec(name=name, count=1, lease_seconds=lease_s, idle_seconds=3600)
        ends[name] = svc.create_annex(ctx, spec).lease_expires_at.timestamp()
    for name in names:
        assert svc.wait_for_join(ctx, name, 1, timeout_s=90) == 1
    return ends


def _ended_at(ctx, names: list[str], timeout_s: float) -> dict[str, float]:
    """Poll until every instance of each annex ended; when (epoch s) each annex's last one
    stopped being pending or running."""
    provider = ctx.provider(ctx.setup_outputs())
    ended: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while len(ended) < len(names) and time.monotonic() < deadline:
        for name in names:
            if name not in ended and not any(
                    i.state in ("pending", "running")
                    for i in provider.query_instances(name).values()):
                ended[name] = time.time()
        time.sleep(0.5)
    missing = sorted(set(names) - set(ended))
    assert not missing, f"still running after {timeout_s:.0f} s: {missing}"
    return ended


def _overruns(ends: dict[str, float], ended: dict[str, float]) -> dict[str, float]:
    return {n: round(ended[n] - ends[n], 1) for n in ends}


def test_the_enforcer_alone_ends_annexes_on_time_when_schedules_fire_early(
        local_cloud, clean_injections):
    # Schedules fire at the first second of their minute, up to 59 s before the lease end; the
    # enforcer waits out the rest.  Sweep and backstop are off: the enforcer alone.
    ctx = local_cloud
    _inject("schedule-early")
    _inject("backstop-off")
    _sweep_state(ctx, "DISABLED")
    try:
        ends = _start(ctx, ["ks-early1", "ks-early2"], lease_s=50)
        overrun = _overruns(ends, _ended_at(ctx, list(ends), timeout_s=50 + 120))
    finally:
        _sweep_state(ctx, "ENABLED")
    print(f"\nE2E: enforcer alone, schedules early: overrun {overrun} s")
    assert all(0 <= o <= 60 for o in overrun.values()), overrun


def test_the_lease_sweep_ends_an_annex_whose_lease_function_failed_or_schedule_was_deleted(
        local_cloud, clean_injections):
    # One annex's lease schedule is deleted by hand; the other's lease function fails three
    # times (the invocation and both retries): the recurring sweep ends both from their
    # htcondor:LeaseEnd tags.  The backstop is off.
    ctx = local_cloud
    _inject("backstop-off")
    ends = _start(ctx, ["ks-nosched", "ks-lambda"], lease_s=40)
    make_client(ctx.aws, "scheduler").delete_schedule(Name="annex-lease-ks-nosched")
    _inject("lambda-error", "3")
    period = SWEEP_PERIOD_S / time_scale_from_env()
    overrun = _overruns(ends, _ended_at(ctx, list(ends), timeout_s=40 + period + 120))
    print(f"\nE2E: lease sweep (period {period:.0f} s here): overrun {overrun} s")
    assert all(0 <= o <= period + 60 for o in overrun.values()), overrun
    provider = ctx.provider(ctx.setup_outputs())
    for name in ends:
        assert not provider.bundle_exists(name) and provider.get_lease(name) is None


def test_the_instance_side_backstop_alone_ends_an_annex_when_the_cloud_side_is_broken(
        local_cloud, clean_injections):
    # Every invocation of the lease function fails (enforcer, retries, sweep): only the node
    # itself is left.  It stops HTCondor and powers off at lease end + 60 s.
    ctx = local_cloud
    _inject("lambda-error", "10000")
    ends = _start(ctx, ["ks-broken"], lease_s=30)
    ended = _ended_at(ctx, list(ends), timeout_s=30 + 150)
    overrun = _overruns(ends, ended)
    print(f"\nE2E: instance-side backstop alone: overrun {overrun} s")
    assert all(55 <= o <= 90 for o in overrun.values()), overrun
    _inject("none")
    assert main(["off", "ks-broken", "--grace", "0"]) == 0   # the bundle and lease left


def _token_exp(instance_id: str) -> int:
    """The ``exp`` claim of the pool token installed on a node (read on the node's disk)."""
    path = local_cloud_module.STATE_DIR / "instances" / instance_id / "upper" / \
        "etc" / "condor" / "tokens.d" / "annex.token"   # the instance's own root (overlay upper)
    payload = path.read_text().strip().split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]


def test_extend_moves_the_lease_of_on_demand_ec2_fleet_and_spot_fleet_annexes(local_cloud):
    ctx = local_cloud
    lease_s = 90
    role = ctx.setup_outputs().spot_fleet_role_arn
    sfr = SpotSpec(api=SPOT_API_SPOT_FLEET, spot_fleet_config=parse_spot_fleet_config(
        json.dumps({"IamFleetRole": role, "LaunchSpecifications": [
            {"InstanceType": "m5.large", "WeightedCapacity": 1}]})))
    ec2_fleet = SpotSpec(api=SPOT_API_EC2_FLEET, fleet_type="request",
                         instance_types=(("m5.large", 1.0),))
    spec = {n: AnnexSpec(name=n, count=1, lease_seconds=lease_s, idle_seconds=3600)
            for n in ("ext-od", "ext-fleet", "ext-sfr")}
    first_end = {"ext-od": svc.create_annex(ctx, spec["ext-od"]).lease_expires_at}
    first_end["ext-fleet"] = svc.create_spot_annex(ctx, spec["ext-fleet"],
                                                   ec2_fleet).lease_expires_at
    first_end["ext-sfr"] = svc.create_spot_annex(ctx, spec["ext-sfr"], sfr).lease_expires_at
    for name in spec:
        assert svc.wait_for_join(ctx, name, 1, timeout_s=90) == 1

    # Extend each by twice its lease (classic and modern syntax both go through extend).
    assert main(["extend", "ext-od", f"{2 * lease_s}s"]) == 0
    assert main(["extend", "ext-fleet", f"{2 * lease_s}s"]) == 0
    assert main(["-annex-name", "ext-sfr", "-duration", f"{2 * lease_s / 3600:.4f}"]) == 0
    provider = ctx.provider(ctx.setup_outputs())
    new_end = {n: provider.get_lease(n).expires_at.timestamp() for n in spec}
    assert all(new_end[n] >= first_end[n].timestamp() + lease_s - 30 for n in spec), new_end

    # Past the original end, every node is still in the pool ...
    time.sleep(max(0.0, max(e.timestamp() for e in first_end.values()) + 20 - time.time()))
    for name in spec:
        slots = annex_slots(ctx.collector, name)
        alive = {i for i, x in provider.query_instances(name).items()
                 if x.state in ("pending", "running")}
        assert alive and {s.instance_id for s in slots} >= alive, (name, slots, alive)
        # ... and its token now expires with the new lease (plus at most 5 min of skew).
        for iid in alive:
            exp = _token_exp(iid)
            assert new_end[name] <= exp <= new_end[name] + 300 + 5, (name, exp, new_end[name])

    # All end at the new lease end.
    ended = _ended_at(ctx, list(spec), timeout_s=max(new_end.values()) - time.time() + 120)
    overrun = {n: round(ended[n] - new_end[n], 1) for n in spec}
    print(f"\nE2E: extend x2: overrun after the new end {overrun} s")
    assert all(0 <= o <= 60 for o in overrun.values()), overrun
    assert math.isfinite(sum(overrun.values()))
