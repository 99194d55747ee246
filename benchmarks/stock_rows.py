"""Rows of issue 10, measured on the local cloud: booting a stock image through cloud-init
against a prepared image (``condor_annex image build``), the agent's CPU seconds per boot against
the floor of any boto3 agent, and join time for N nodes against a floor whose nodes pay that
boto3 cost too.

* **Stock vs prepared** (``boot.stock.nN``): create → N startds in the collector, the stock
  ``debian-13`` image (cloud-init runs the bootstrap: install step — a no-op in the local cloud,
  whose root holds the packages — agent fetch, unit) against the prepared image built in the same
  run (install and fetch skipped).  Target: stock ≤ 1.3 × prepared.
* **Agent CPU** (``agent.cpu``): the agent's own user+system CPU seconds from its start to
  starting condor_master (its console line ``agent CPU X s``), median over every node booted in
  this run, against the floor measured in the same run on the same instance root: a python3
  that imports boto3, makes one S3 client and does one GetObject (see :data:`FLOOR_FETCH`).
  Target: floor + 0.05 s.
* **Join with a boto3 floor** (``join.boto3floor.nN``): ours against
  :class:`benchmarks.local_rows.Floor` nodes that each run :data:`FLOOR_FETCH` before
  ``condor_master``.  Target: ≤ 1.2 ×.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks.report import Row

STOCK_TARGET = 1.3
AGENT_CPU_MARGIN_S = 0.05
JOIN_TARGET = 1.2
#: What any boto3 agent must do at boot (run by the instance's python3, with the CLI user's key
#: in the environment; prints its own CPU seconds).
FLOOR_FETCH = (
    "import resource, sys, boto3\n"
    "s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1')\n"
    "s3.get_object(Bucket=sys.argv[2], Key=sys.argv[3])['Body'].read()\n"
    "r = resource.getrusage(resource.RUSAGE_SELF)\n"
    "print('floor CPU %.3f s' % (r.ru_utime + r.ru_stime), flush=True)\n")
_AGENT_CPU_RE = re.compile(r"agent CPU (\d+\.\d+)s")
_FLOOR_CPU_RE = re.compile(r"floor CPU (\d+\.\d+) s")


def _console(iid: str) -> str:
    from condor_annex.providers.local.cloud import STATE_DIR
    try:
        return (STATE_DIR / "instances" / iid / "console.log").read_text(errors="replace")
    except OSError:
        return ""


def agent_cpu(instance_ids: tuple[str, ...]) -> list[float]:
    """The agent's CPU seconds up to starting condor_master, one per node that logged it."""
    out = []
    for iid in instance_ids:
        m = _AGENT_CPU_RE.search(_console(iid))
        if m:
            out.append(float(m.group(1)))
    return out


def _join(ctx: Any, name: str, n: int, image_id: str, timeout_s: float) -> tuple[float, list]:
    """create → N startds (service calls), the annex ended after; (seconds, agent CPU list)."""
    from benchmarks.local_rows import end_and_settle
    from condor_annex.model import AnnexSpec
    from condor_annex.service import annex as svc

    spec = AnnexSpec(name=name, count=n, lease_seconds=3600, idle_seconds=3600,
                     image_id=image_id)
    t0 = time.perf_counter()
    try:
        result = svc.create_annex(ctx, spec)
        svc.wait_for_join(ctx, name, n, timeout_s=timeout_s)
        total = time.perf_counter() - t0
    finally:
        end_and_settle(ctx, name)
    return total, agent_cpu(result.instance_ids)


def stock_rows(ctx: Any, counts: tuple[int, ...], runs: int, log: Callable[[str], None],
               join_counts: tuple[int, ...] = (20,)) -> list[Row]:
    """Build a prepared image, then the rows of the module docstring."""
    from condor_annex.providers.aws.images import resolve_image
    from condor_annex.service.image_build import build_image

    stock = resolve_image(ctx.aws, instance_type="m4.large", name="debian-13").image_id
    t0 = time.perf_counter()
    built = build_image(ctx, instance_type="m4.large", record=False)
    log(f"  prepared image {built.image_id} built in {time.perf_counter() - t0:.1f} s")
    rows: list[Row] = []
    cpus: list[float] = []
    for n in counts:
        s_runs, p_runs = [], []
        for r in range(runs):
            s, c1 = _join(ctx, f"stock-n{n}-r{r}", n, stock, 120 + 3 * n)
            p, c2 = _join(ctx, f"prep-n{n}-r{r}", n, built.image_id, 120 + 3 * n)
            s_runs.append(s)
            p_runs.append(p)
            cpus += c1 + c2
            log(f"  N={n} run {r + 1}/{runs}: stock {s:.1f} s, prepared {p:.1f} s")
        row = Row(key=f"boot.stock.n{n}", what=f"join time, stock image (cloud-init) / "
                  f"prepared image, N={n}", unit="s", samples=s_runs,
                  reference=statistics.median(p_runs), reference_samples=p_runs,
                  target=f"≤ {STOCK_TARGET}× prepared")
        row.target_ok = row.ratio is not None and row.ratio <= STOCK_TARGET
        rows.append(row)
    floor_cpu: list[float] = []
    for n in join_counts:
        ours, floor = [], []
        for r in range(runs):
            o, c = _join(ctx, f"join20-n{n}-r{r}", n, stock, 120 + 3 * n)
            f, fc = floor_join_boto3(ctx, f"bfloor-n{n}-r{r}", n, 120 + 3 * n)
            ours.append(o)
            floor.append(f)
            cpus += c
            floor_cpu += fc
            log(f"  join N={n} run {r + 1}/{runs}: ours {o:.1f} s, boto3 floor {f:.1f} s")
        row = Row(key=f"join.boto3floor.n{n}", what=f"join time create → {n} startds, against "
                  "a floor whose nodes do boto3 + one GetObject", unit="s", samples=ours,
                  reference=statistics.median(floor), reference_samples=floor,
                  target=f"≤ {JOIN_TARGET}× floor")
        row.target_ok = row.ratio is not None and row.ratio <= JOIN_TARGET
        rows.append(row)
    if cpus and floor_cpu:
        ref = statistics.median(floor_cpu)
        row = Row(key="agent.cpu", what="agent CPU per boot (to condor_master) vs "
                  "import boto3 + S3 client + GetObject", unit="s", samples=cpus,
                  reference=ref, reference_samples=floor_cpu,
                  target=f"≤ floor + {AGENT_CPU_MARGIN_S} s")
        row.target_ok = statistics.median(cpus) <= ref + AGENT_CPU_MARGIN_S
        rows.append(row)
    return rows


def floor_join_boto3(ctx: Any, name: str, n: int, timeout_s: float) -> tuple[float, list]:
    """A :class:`~benchmarks.local_rows.Floor` run whose nodes first run :data:`FLOOR_FETCH`
    (one GetObject of the agent from the setup bucket); (seconds, floor CPU per node)."""
    from benchmarks.local_rows import Floor
    from condor_annex import config
    from condor_annex.providers.aws.agent_package import agent_key

    endpoint = config.knob(ctx.knobs, "ANNEX_INSTANCE_AWS_ENDPOINT_URL", ctx.aws.region)
    key = ctx.aws.credentials()
    floor = Floor(ctx, name, n, prelude=(FLOOR_FETCH, endpoint, ctx.setup_outputs().bucket,
                                         agent_key(), key))
    try:
        total = floor.run(timeout_s)
    finally:
        cpu = [float(m.group(1)) for node in floor.nodes
               for m in [_FLOOR_CPU_RE.search(floor.output(node))] if m]
        floor.stop()
    return total, cpu
