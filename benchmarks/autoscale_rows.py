"""Issue 13's autoscale row, on the local cloud: ``autoscale.first_claim``, seconds from idle
jobs in the queue to the first slot of an autoscaled annex claimed by one of them, for an
annex created from zero (``--autoscale --max 2 --min 0``), with condor_annexd under the pool's
condor_master (``condor_annex local annexd on``, passes every 2 s, the default settle time of
30 s).  The reference is the join floor at N=1 (:func:`benchmarks.local_rows.floor_join`: a bare
execute node started directly, from boot to its slot in the collector); the ratio to it is what
demand-driven growth costs over a node that was already asked for: the settle time, a pass,
the launch, the boot and join, and a negotiation cycle.

Target: at most the floor + the settle time + 30 s (two passes, the launch call, a negotiation
cycle), i.e. growth adds nothing but its deliberate wait.

``python -m benchmarks --only local --skip-join --lease-runs 0 --kill-switch-runs 0
--stock-runs 0 --interruption-runs 0 --autoscale-runs 1`` runs just this row (about 4 min).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks.report import Row

#: The settle time the row runs with (the product's default, ``ANNEX_AUTOSCALE_SETTLE``).
SETTLE_S = 30
#: Seconds between annexd's passes in the row.
INTERVAL_S = 2
#: What the target allows on top of the floor and the settle time (passes, launch, negotiation).
SLACK_S = 30
#: Give up on one run after this long.
RUN_TIMEOUT_S = 600


def autoscale_rows(ctx: Any, runs: int, log: Callable[[str], None]) -> list[Row]:
    """``runs`` autoscaled annexes from zero, each timed from its jobs' submission to the
    first of them running on it, interleaved with N=1 join-floor runs (see the docstring)."""
    from benchmarks.local_rows import floor_join
    from condor_annex import config
    from condor_annex.cli.main import main
    from condor_annex.providers.local import jobs as local_jobs

    row = Row("autoscale.first_claim", "autoscaled annex from zero: idle jobs -> first annex "
              "slot claimed (settle 30 s, passes every 2 s)", "s",
              target=f"<= floor + settle {SETTLE_S} s + {SLACK_S} s")
    config.write_block("autoscale-bench", {"ANNEXD_INTERVAL": str(INTERVAL_S),
                                           "ANNEX_AUTOSCALE_SETTLE": f"{SETTLE_S}s"})
    floors: list[float] = []
    try:
        if main(["local", "annexd", "on"]) != 0:
            raise RuntimeError("local annexd on failed")
        for run in range(runs):
            name = f"bench-as{run}"
            try:
                floors.append(floor_join(ctx, f"floor-as{run}", 1, RUN_TIMEOUT_S)["total_s"])
                if main(["create", name, "--autoscale", "--max", "2", "--min", "0",
                         "--duration", "30m", "--idle", "2m", "--no-owner", "--yes"]) != 0:
                    raise RuntimeError("create failed")
                t0 = time.monotonic()
                cluster = local_jobs.submit(name, 4, sleep_s=30)
                while not any(j.status in (2, 4) and j.annex_name == name
                              for j in local_jobs.jobs(cluster)):
                    if time.monotonic() - t0 > RUN_TIMEOUT_S:
                        raise RuntimeError(f"no job ran on {name} in {RUN_TIMEOUT_S} s")
                    time.sleep(0.5)
                row.samples.append(time.monotonic() - t0)
                log(f"autoscale run {run}: first slot claimed {row.samples[-1]:.1f} s after "
                    f"submit (floor {floors[-1]:.1f} s)")
                local_jobs.remove(cluster)
            finally:
                main(["off", name, "--grace", "0"])
    except Exception as e:   # noqa: BLE001 - a row with its error, not a crash
        row.error = str(e)
    finally:
        main(["local", "annexd", "off"])
        config.write_block("autoscale-bench", {})
    if floors:
        row.reference = statistics.median(floors)
        row.reference_samples = floors
    if row.samples and row.reference is not None:
        row.target_ok = max(row.samples) <= row.reference + SETTLE_S + SLACK_S
        ratio = statistics.median(row.samples) / row.reference
        row.notes = (f"ratio to the join floor (N=1) {ratio:.2f}x; the settle time alone is "
                     f"{SETTLE_S} s")
    return [row]
