"""Issue 12's interruption rows, on the local cloud: a spot annex of two nodes runs jobs; one
node gets EC2's interruption notice (``condor_annex local inject interrupt``, served from its
IMDS) and must leave the pool before EC2 ends it.

* ``interruption.slot_gone``: seconds from the notice to the node's slots gone from the
  collector, compared with the notice (target: the slots gone within 90 s of a 120 s notice,
  i.e. a ratio <= 0.75);
* ``interruption.jobs_lost``: jobs of the run that did not complete (target 0): the
  interrupted node's job must be vacated, requeued and finish on the other node.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from benchmarks.report import Row

NOTICE_S = 120
SLOT_GONE_TARGET_S = 90


def interruption_rows(ctx, runs: int, log: Callable[[str], None], *,
                      notice_s: int = NOTICE_S) -> list[Row]:
    """``runs`` annexes, one interruption each (see the module docstring)."""
    from condor_annex.cli.main import main
    from condor_annex.providers.local import jobs as local_jobs

    gone = Row("interruption.slot_gone", f"spot interruption notice ({notice_s} s) -> the "
               "node's slots gone from the collector", "s", reference=float(notice_s),
               target=f"<= {SLOT_GONE_TARGET_S} s ({SLOT_GONE_TARGET_S / NOTICE_S:.2f}x)")
    lost = Row("interruption.jobs_lost", "jobs lost to a spot interruption (2 jobs, one on "
               "the interrupted node)", "jobs", target="0")
    for run in range(runs):
        name = f"bench-int{run}"
        try:
            if main(["create", name, "--spot", "--capacity", "2", "--instance-types",
                     "m5.large", "--duration", "30m", "--idle", "10m", "--no-owner", "--wait",
                     "--wait-timeout", "5m"]) != 0:
                raise RuntimeError("create failed")
            cluster = local_jobs.submit(name, 2, sleep_s=notice_s)
            deadline = time.monotonic() + 180
            while len(running := [j for j in local_jobs.jobs(cluster) if j.status == 2]) < 2:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"jobs not running: {local_jobs.jobs(cluster)}")
                time.sleep(1)
            victim = running[0].instance_id
            if main(["local", "inject", "interrupt", victim, "--notice", f"{notice_s}s"]) != 0:
                raise RuntimeError("inject failed")
            t0 = time.monotonic()
            while victim in {iid for _, iid in local_jobs.condor_status_annex(name)}:
                if time.monotonic() - t0 > notice_s + 60:
                    break
                time.sleep(0.5)
            gone.samples.append(time.monotonic() - t0)
            deadline = time.monotonic() + notice_s * 3 + 120
            while (done := len([j for j in local_jobs.jobs(cluster) if j.status == 4])) < 2 \
                    and time.monotonic() < deadline:
                time.sleep(2)
            lost.samples.append(float(2 - done))
            log(f"interruption run {run}: slots gone {gone.samples[-1]:.1f} s, "
                f"{2 - done} job(s) lost")
        except Exception as e:   # noqa: BLE001 - a row with its error, not a crash
            gone.error = lost.error = str(e)
        finally:
            main(["off", name, "--grace", "0"])
    if gone.samples:
        gone.target_ok = max(gone.samples) <= SLOT_GONE_TARGET_S
    if lost.samples:
        lost.target_ok = max(lost.samples) == 0
    return [gone, lost]
