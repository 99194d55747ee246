"""Issue 11's reconciler rows (no cloud, no local cloud): one plan pass over a synthetic snapshot
of 10,000 instances in 200 annexes (target <= 1 s) and the peak RSS of a process that builds that
snapshot and plans it (target <= 200 MB; the daemon's pass at that size, before its cloud calls).

The snapshot mixes what a pass meets: mostly joined nodes with startd ads, some booting, some
past the join deadline without an ad, some terminated, a few annexes past their lease, one
launch request per annex.  Peak RSS is measured in a child process
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, KiB on Linux) so the benchmark's own memory
does not count.

``python -m benchmarks.reconciler_rows --rss`` is the child: it prints its peak RSS in KiB.
"""

from __future__ import annotations

import random
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from benchmarks.report import Row

INSTANCES = 10_000
ANNEXES = 200
PLAN_TARGET_S = 1.0
RSS_TARGET_MIB = 200.0
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def synthetic_snapshot(instances: int = INSTANCES, annexes: int = ANNEXES, seed: int = 11):
    """A deterministic :class:`~condor_annex.reconciler.snapshot.Snapshot` of ``instances``
    instances spread evenly over ``annexes`` annexes (see the module docstring for the mix)."""
    from condor_annex.reconciler.snapshot import SeenInstance, Snapshot, StoreView
    from condor_annex.state.lifecycle import Lifecycle as L
    from condor_annex.state.records import AnnexRecord, InstanceRecord, LaunchRecord

    rnd = random.Random(seed)
    per = instances // annexes
    store_annexes, launches, rows, seen, ads, leases = {}, [], {}, {}, {}, {}
    for a in range(annexes):
        name = f"annex-{a:03d}"
        token = f"{name}_{a:032x}"
        lease_end = NOW + timedelta(hours=1) if a % 50 else NOW - timedelta(minutes=1)
        store_annexes[name] = AnnexRecord(name, {"instance_type": "m5.large"}, per, lease_end,
                                          NOW - timedelta(hours=1))
        leases[name] = lease_end
        launches.append(LaunchRecord(token, name, "on-demand", per, "launched",
                                     NOW - timedelta(hours=1), NOW - timedelta(hours=1)))
        for i in range(per):
            iid = f"i-{a:05x}{i:012x}"
            roll = rnd.random()
            launched = NOW - timedelta(seconds=rnd.randint(30, 3600))
            if roll < 0.80:      # joined, serving
                state, ec2 = L.JOINED, "running"
                ads[iid] = 1
            elif roll < 0.88:    # booting, within or past the join deadline
                state, ec2 = L.ALLOCATED, "running"
            elif roll < 0.93:    # just launched, not listed yet or pending
                state, ec2 = L.REQUESTED, "pending" if roll < 0.91 else None
                launched = NOW - timedelta(seconds=20)
            elif roll < 0.97:    # shutting down after an idle shutdown
                state, ec2 = L.TERMINATING, "shutting-down"
            else:                # ended, still listed
                state, ec2 = L.TERMINATED, "terminated"
            rows[iid] = InstanceRecord(iid, name, token, state.value, launched)
            if ec2 is not None:
                seen[iid] = SeenInstance(iid, name, ec2, launched, token)
    return Snapshot(instances=seen, startd_ads=ads, leases=leases,
                    store=StoreView(annexes=store_annexes, launch_requests=tuple(launches),
                                    instances=rows))


def _child_rss_kib() -> int:
    """Build the snapshot, plan it once, return this process's peak RSS (KiB)."""
    from condor_annex.reconciler.plan import plan
    actions = plan(synthetic_snapshot(), NOW)
    assert actions
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rows(runs: int, log: Callable[[str], None]) -> list[Row]:
    """The plan-time row (``reconciler.plan.n10000``) and the peak-RSS row
    (``reconciler.rss.n10000``)."""
    from condor_annex.reconciler.plan import plan
    snapshot = synthetic_snapshot()
    samples, actions = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        actions = plan(snapshot, NOW)
        samples.append(time.perf_counter() - t0)
    kinds: dict[str, int] = {}
    for a in actions:
        kinds[type(a).__name__] = kinds.get(type(a).__name__, 0) + 1
    what = f"plan pass: {INSTANCES:,} instances in {ANNEXES} annexes (synthetic snapshot)"
    log(f"  {what}: median {sorted(samples)[len(samples) // 2]:.3f} s, {len(actions)} actions")
    plan_row = Row(key="reconciler.plan.n10000", what=what, unit="s", samples=samples,
                   target=f"<= {PLAN_TARGET_S:g} s", target_ok=max(samples) <= PLAN_TARGET_S,
                   extra={"actions": kinds})
    what = f"peak RSS: build + plan {INSTANCES:,} instances (child process)"
    out = subprocess.run([sys.executable, "-m", "benchmarks.reconciler_rows", "--rss"],
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        return [plan_row, Row(key="reconciler.rss.n10000", what=what, unit="MiB",
                              error=out.stderr.strip()[-300:])]
    rss = int(out.stdout.split()[-1]) / 1024
    log(f"  {what}: {rss:.0f} MiB")
    return [plan_row, Row(key="reconciler.rss.n10000", what=what, unit="MiB", samples=[rss],
                          target=f"<= {RSS_TARGET_MIB:g} MiB", target_ok=rss <= RSS_TARGET_MIB,
                          notes="snapshot built in memory; the daemon's observe step adds "
                                "boto3 (not measured here)")]


if __name__ == "__main__":
    if sys.argv[1:] == ["--rss"]:
        print(_child_rss_kib())
    else:
        for r in rows(5, print):
            print(r.key, r.samples, r.target, r.target_ok, r.error)
