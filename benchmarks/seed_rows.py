"""Issue 13's seed rows, on the local cloud.

* ``seed.ready``: seconds from ``condor_annex seed create`` to the seed's console saying it is
  ready (wheelhouse checked/uploaded, launch, cloud-init, condor-annex installed from the
  wheels, central manager up, condor_annexd started).  Reference: the N=1 join floor (a bare
  execute node from boot to its slot in the collector); target <= 120 s.
* ``seed.annex_join``: seconds of ``condor_annex create NAME --count 1 --wait`` run on the seed
  as its admin user (an annex of the seed's own pool, from the command to its node's slot in the
  seed's collector); reference: the same floor; target <= the floor + 30 s (what any create
  adds to a bare node: the new annex role's instance profile refused by launches for 5 s, as
  IAM propagation makes EC2 do, the launch retries, cloud-init's stages and the agent).

``python -m benchmarks --only local --skip-join --lease-runs 0 --kill-switch-runs 0
--stock-runs 0 --interruption-runs 0 --budget-runs 0 --autoscale-runs 0 --seed-runs 1`` runs
just these rows (about 2 min a run).
"""

from __future__ import annotations

import io
import json
import statistics
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from typing import Any

from benchmarks.report import Row

#: Targets (see the docstring).
READY_TARGET_S = 120.0
JOIN_SLACK_S = 30.0
RUN_TIMEOUT_S = 600


def seed_rows(ctx: Any, runs: int, log: Callable[[str], None]) -> list[Row]:
    """``runs`` seeds, each made ready, grown by one annex from its own shell, and ended;
    interleaved with N=1 join-floor runs."""
    from benchmarks.local_rows import floor_join
    from condor_annex.cli.main import main
    from condor_annex.providers.local.instance_shell import run_on

    ready = Row("seed.ready", "seed create -> the seed ready (central manager + submit node "
                "+ condor_annexd)", "s", target=f"<= {READY_TARGET_S:g} s")
    join = Row("seed.annex_join", "create --count 1 --wait run on the seed -> its node in the "
               "seed's pool", "s", target=f"<= floor + {JOIN_SLACK_S:g} s")
    floors: list[float] = []
    try:
        for run in range(runs):
            floors.append(floor_join(ctx, f"floor-seed{run}", 1, RUN_TIMEOUT_S)["total_s"])
            out = io.StringIO()
            t0 = time.monotonic()
            with redirect_stdout(out):
                if main(["seed", "create", "--json"]) != 0:
                    raise RuntimeError("seed create failed")
            ready.samples.append(time.monotonic() - t0)
            seed = json.loads(out.getvalue())["instance_id"]
            try:
                t1 = time.monotonic()
                p = run_on(seed, ["condor_annex", "create", f"bench-seeded{run}", "--count",
                                  "1", "--duration", "30m", "--idle", "5m", "--wait"],
                           user="admin", timeout_s=RUN_TIMEOUT_S)
                if p.returncode != 0:
                    raise RuntimeError("create on the seed failed: "
                                       + (p.stderr.strip().splitlines() or ["?"])[-1])
                join.samples.append(time.monotonic() - t1)
                if join.samples[-1] > floors[-1] + JOIN_SLACK_S:   # say what took the time
                    for line in p.stderr.strip().splitlines()[-12:]:
                        log(f"  create on the seed: {line}")
                log(f"seed run {run}: ready {ready.samples[-1]:.1f} s, annex joined "
                    f"{join.samples[-1]:.1f} s (floor {floors[-1]:.1f} s)")
            finally:
                with redirect_stdout(io.StringIO()):
                    main(["seed", "off"])
    except Exception as e:   # noqa: BLE001 - rows with their error, not a crash
        ready.error = ready.error or str(e)
        join.error = str(e)
    if floors:
        for row in (ready, join):
            row.reference = statistics.median(floors)
            row.reference_samples = floors
    if ready.samples:
        ready.target_ok = max(ready.samples) <= READY_TARGET_S
    if join.samples and join.reference is not None:
        join.target_ok = max(join.samples) <= join.reference + JOIN_SLACK_S
        join.notes = (f"ratio to the join floor (N=1) "
                      f"{statistics.median(join.samples) / join.reference:.2f}x")
    return [ready, join]
